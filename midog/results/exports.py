"""Detections in the formats viewers read (`midog export`): GeoJSON for QuPath, tab-separated
points for QuPath's Counting tool, XML for ASAP, a plain CSV table, and a DICOM annotation
object for DICOM slides (midog.results.dicom_ann).

Coordinates are pixels: millimetres divided by the spacing the result was made at, per axis
(midog.results.sidecar). The CSV and ASAP XML hold level-0 pixels. QuPath crops a slide it
reads through OpenSlide to the slide's non-empty region (OpenSlide's bounds: MRXS, SCN and
other formats), so QuPath's (0, 0) is that region's corner: the QuPath exports subtract its
offset unless `--qupath-bounds off`.

QuPath objects. Mitotic figures are points to count, and point *annotations* with a
classification are what QuPath's Counting tool makes and what mitosis datasets exchange;
QuPath also draws them at every zoom. A detection with a zero-size geometry is drawn only
when zoomed in (below about 4x zoom-out QuPath paints detections with a width only, and on
large slides from a downsampled overlay), so `--qupath-objects detection` writes each one as
a small circle of a detection's size, which has an area and is drawn at every zoom. The
probability is a measurement either way. QuPath reads ":" in a class name as a sub-class
separator and refuses it inside a name, so a class name is written with " - " in its place
(the original stays in the object's name).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import re
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..detector.detections import MITOTIC, NON_MITOTIC, Detections

FORMATS = {"geojson": ".geojson", "qupath-points": ".points.tsv", "asap": ".xml", "csv": ".csv", "dicom-ann": ".dcm"}
QUPATH_FORMATS = ("geojson", "qupath-points")  # the formats in QuPath's pixels
QUPATH_OBJECTS = ("annotation", "detection")
QUPATH_BOUNDS = ("auto", "off")
# Red for mitotic figures, as viewers conventionally draw them; blue for the look-alikes.
COLOURS = {MITOTIC: (230, 25, 75), NON_MITOTIC: (0, 130, 200)}
OTHER_COLOUR = (128, 128, 128)
# Ids are UUIDs derived from this namespace and the image, the result and the point, so the
# same export gives the same file every time, and two results of one image never share one.
ID_NAMESPACE = uuid.UUID("5d0c7b0e-2f4e-4c3a-9a43-0c1f2b6d7e11")
# A detection's circle: MIDOG's labels are 50 px boxes at 0.25 um/px, about one cell.
DETECTION_DIAMETER_MM = 0.0125
CIRCLE_VERTICES = 24


@dataclass(frozen=True)
class ExportOptions:
    qupath_objects: str = "annotation"
    qupath_bounds: str = "auto"  # auto: QuPath's pixels start at the slide's bounds offset
    identity: str = ""  # the image and result the ids derive from (`identity`)
    weights_sha256: str | None = None  # the weights that made the result (DICOM annotations name them)


def pixels(detections: Detections) -> np.ndarray:
    """(N, 2) level-0 pixel coordinates of the points, from their millimetres."""
    return detections.xy_mm / np.asarray(detections.spacing_mm, float)


def qupath_offset(detections: Detections, options: ExportOptions) -> tuple[float, float]:
    """Where QuPath's pixel (0, 0) lies in level-0 pixels: the slide's bounds offset with
    --qupath-bounds auto (QuPath crops OpenSlide slides to their bounds), else (0, 0)."""
    if options.qupath_bounds not in QUPATH_BOUNDS:
        raise ValueError(f"qupath_bounds must be one of {QUPATH_BOUNDS}, not {options.qupath_bounds!r}")
    x, y = detections.offset_px if options.qupath_bounds == "auto" else (0, 0)
    return float(x), float(y)


def qupath_pixels(detections: Detections, options: ExportOptions) -> np.ndarray:
    return pixels(detections) - np.asarray(qupath_offset(detections, options))


def identity(result: Path, image_name: str | None) -> str:
    """What the ids of one export derive from: the image's name and the result file's bytes."""
    return f"{image_name or ''}\n{hashlib.sha256(result.read_bytes()).hexdigest()}"


def colour(label: str) -> tuple[int, int, int]:
    return COLOURS.get(label, OTHER_COLOUR)


def qupath_class(label: str) -> str:
    """The class name QuPath keeps as one class: no ":" (its sub-class separator)."""
    return re.sub(r"\s*:\s*", " - ", label).strip() or "unnamed"


def _point_id(identity_: str, i: int, xy_mm: np.ndarray, p: float, label: str) -> str:
    # Python floats' repr, not numpy's printed text: the same value on every numpy version.
    key = "\n".join([identity_, str(i), repr(float(xy_mm[0])), repr(float(xy_mm[1])), repr(float(p)), label])
    return str(uuid.uuid5(ID_NAMESPACE, key))


def _circle(x: float, y: float, rx: float, ry: float) -> list[list[float]]:
    angles = np.linspace(0, 2 * math.pi, CIRCLE_VERTICES, endpoint=False)
    ring = [[float(x + rx * math.cos(a)), float(y + ry * math.sin(a))] for a in angles]
    return ring + [ring[0]]  # GeoJSON rings are closed


def geojson(detections: Detections, options: ExportOptions = ExportOptions()) -> dict:
    """A FeatureCollection as QuPath imports it: point annotations, or circular detections."""
    objects = options.qupath_objects
    if objects not in QUPATH_OBJECTS:
        raise ValueError(f"objects must be one of {QUPATH_OBJECTS}, not {objects!r}")
    rx, ry = (DETECTION_DIAMETER_MM / 2 / s for s in detections.spacing_mm)
    features = []
    rows = zip(qupath_pixels(detections, options), detections.xy_mm, detections.scores.tolist(), detections.class_names)
    for i, ((x, y), xy_mm, p, label) in enumerate(rows):
        name = qupath_class(label)
        properties: dict = {"objectType": objects, "classification": {"name": name, "color": list(colour(label))}}
        if name != label:
            properties["name"] = label
        if not math.isnan(p):
            properties["measurements"] = {"probability": float(p)}
        if objects == "annotation":
            geometry = {"type": "Point", "coordinates": [float(x), float(y)]}
        else:
            geometry = {"type": "Polygon", "coordinates": [_circle(float(x), float(y), rx, ry)]}
        features.append({"type": "Feature", "id": _point_id(f"{options.identity}\n{objects}", i, xy_mm, p, label), "geometry": geometry, "properties": properties})
    return {"type": "FeatureCollection", "features": features}


def qupath_points(detections: Detections, options: ExportOptions = ExportOptions()) -> str:
    """The Counting tool's "Load points" file: a header, then x, y, class and colour per
    point, tab-separated. QuPath makes one points annotation per class and colour."""
    lines = ["x\ty\tclass\tcolor"]
    for (x, y), label in zip(qupath_pixels(detections, options), detections.class_names):
        r, g, b = colour(label)
        packed = (255 << 24 | r << 16 | g << 8 | b) - (1 << 32)  # Java's signed ARGB int, as QuPath writes it
        lines.append(f"{float(x)!r}\t{float(y)!r}\t{qupath_class(label)}\t{packed}")
    return "\n".join(lines) + "\n"


def asap_xml(detections: Detections) -> str:
    """ASAP_Annotations with one Dot per point, in a group per label. ASAP refuses a file
    whose annotation names a group that is not declared, so every label used is declared."""
    root = ET.Element("ASAP_Annotations")
    annotations = ET.SubElement(root, "Annotations")
    for i, ((x, y), p, label) in enumerate(zip(pixels(detections), detections.scores.tolist(), detections.class_names)):
        # ASAP has no measurements: the probability goes in the name, which its list shows,
        # at full precision (the shortest text that reads back as the same number).
        name = f"{label} {i + 1}" + ("" if math.isnan(p) else f" (p={float(p)!r})")
        dot = ET.SubElement(annotations, "Annotation", Name=name, Type="Dot", PartOfGroup=label, Color=_hex(colour(label)))
        coords = ET.SubElement(dot, "Coordinates")
        ET.SubElement(coords, "Coordinate", Order="0", X=repr(float(x)), Y=repr(float(y)))
    groups = ET.SubElement(root, "AnnotationGroups")
    for label in dict.fromkeys(detections.class_names):
        group = ET.SubElement(groups, "Group", Name=label, PartOfGroup="None", Color=_hex(colour(label)))
        ET.SubElement(group, "Attributes")
    ET.indent(root)
    return '<?xml version="1.0"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def _hex(rgb: tuple[int, int, int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def csv_table(detections: Detections) -> str:
    """x_px,y_px,x_mm,y_mm,probability,label in level-0 pixels; the probability is empty
    where the result has none."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["x_px", "y_px", "x_mm", "y_mm", "probability", "label"])
    for (xp, yp), (xm, ym), p, label in zip(pixels(detections), detections.xy_mm, detections.scores.tolist(), detections.class_names):
        writer.writerow([repr(float(xp)), repr(float(yp)), repr(float(xm)), repr(float(ym)), "" if math.isnan(p) else repr(float(p)), label])
    return out.getvalue()


def render(detections: Detections, fmt: str, options: ExportOptions = ExportOptions()) -> str:
    if fmt == "geojson":
        return json.dumps(geojson(detections, options))
    if fmt == "qupath-points":
        return qupath_points(detections, options)
    if fmt == "asap":
        return asap_xml(detections)
    if fmt == "csv":
        return csv_table(detections)
    raise ValueError(f"format must be one of {tuple(FORMATS)}, not {fmt!r}")


def export(detections: Detections, fmt: str, target: str | Path, options: ExportOptions = ExportOptions()) -> Path | None:
    """Write `detections` as `fmt` to `target`; returns it, or None where a format writes
    nothing for a result without points (dicom-ann)."""
    from ..atomic import write_text_atomic

    if fmt == "dicom-ann":  # binary, and it needs the DICOM source: midog.results.dicom_ann
        from .dicom_ann import write_annotations

        return write_annotations(detections, target, options.identity, options.weights_sha256)
    return write_text_atomic(target, render(detections, fmt, options))
