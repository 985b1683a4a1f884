import java.io.File;
import java.util.List;
import qupath.lib.io.PathIO;
import qupath.lib.io.PointIO;
import qupath.lib.objects.PathObject;
import qupath.lib.common.ColorTools;

// Reads midog's exports with QuPath's own readers (File > Import objects; Counting tool's Load points)
// and prints one line per object: type, class, colour, probability, id, ROI type, area, x, y.
public class ReadExports {
    public static void main(String[] args) throws Exception {
        for (String arg : args) {
            File f = new File(arg);
            List<PathObject> objects = arg.endsWith(".tsv") ? PointIO.readPoints(f) : PathIO.readObjects(f);
            System.out.println("FILE " + arg + " " + objects.size());
            for (PathObject o : objects) {
                var pc = o.getPathClass();
                String cls = pc == null ? "null" : pc.toString() + "|parent=" + (pc.getParentClass() == null ? "none" : pc.getParentClass().toString());
                Integer rgb = pc == null ? null : pc.getColor();
                String colour = rgb == null ? "none" : ColorTools.red(rgb) + "," + ColorTools.green(rgb) + "," + ColorTools.blue(rgb);
                var roi = o.getROI();
                Object p = o.getMeasurements().get("probability");
                System.out.println((o.isAnnotation() ? "annotation" : o.isDetection() ? "detection" : "other") + "\t" + cls + "\t" + colour + "\t" + p
                    + "\t" + o.getID() + "\t" + roi.getRoiName() + "\t" + roi.getArea() + "\t" + roi.getNumPoints() + "\t" + roi.getCentroidX() + "\t" + roi.getCentroidY() + "\t" + o.getName());
            }
        }
    }
}
