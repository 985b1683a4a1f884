"""DICOM whole-slide images in, DICOM annotations out, checked by tools nobody here wrote:
series made by `wsidicomizer` from our synthetic pyramidal TIFFs; the annotation object read
back by highdicom and wsidicom and validated by dciodvfy (dicom3tools) where installed; the
same slide as TIFF and as DICOM gives the same mitotic figures; hostile series (truncated,
a level missing, two slides mixed, a wrong transfer syntax, a split level) give one error
each naming the file while the next image still runs."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT

pytest.importorskip("wsidicomizer", reason="wsidicomizer (requirements-dev.txt) makes the test series")
pytest.importorskip("highdicom", reason="highdicom (requirements.txt) writes and reads the annotations")

import dicom_series as ds  # noqa: E402  (needs the two above)

from midog.commands.cli import main  # noqa: E402
from midog.errors import ImageError  # noqa: E402
from midog.slides.readers import open_slide  # noqa: E402

DEMO = ROOT / "weights" / "demo-synthetic.pth"
UM = 1e-3  # mm


def _slide(path: Path, width: int, height: int, seed: int, region: int) -> Path:
    from midog.synth import make_slide

    make_slide(path, width, height, seed=seed, n_regions=1, region_size=region, levels=2)
    return path


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> dict[str, Path]:
    """The synthetic slide as TIFF and its wsidicomizer series; a small second slide (the
    good image run after the hostile ones); results of `midog detect` on TIFF and series."""
    root = tmp_path_factory.mktemp("dicom")
    tiff = _slide(root / "slide.tiff", 2048, 1536, 3, 768)
    series = root / "series"
    ds.dicomize(tiff, series)
    small = _slide(root / "small.tiff", 1024, 768, 5, 512)
    ds.dicomize(small, root / "small")
    out = root / "out"
    common = ["--weights", str(DEMO), "--style", "2022", "--no-progress", "-o", f"{out}/"]
    assert main(["detect", str(tiff), *common]) == 0
    assert main(["detect", str(series), *common, "--export", "dicom-ann"]) == 0
    return {"root": root, "tiff": tiff, "series": series, "small": root / "small", "out": out}


def _figures(result: Path) -> tuple[np.ndarray, np.ndarray]:
    points = [p for p in json.loads(result.read_text())["points"] if p["name"] == "mitotic figure"]
    return np.array([p["point"][:2] for p in points]).reshape(-1, 2), np.array([p["probability"] for p in points])


def test_series_opens_as_one_slide_from_its_folder_or_any_file(made):
    tiff = open_slide(made["tiff"])
    for path in [made["series"], *sorted(made["series"].glob("*.dcm"))]:
        with open_slide(path) as slide:
            assert (slide.width, slide.height, slide.level_downsamples) == (tiff.width, tiff.height, (1.0, 4.0))
            assert slide.spacing_mm == pytest.approx(tiff.spacing_mm, rel=1e-9)
            # The same JPEG tiles, decoded by another library: equal up to chroma upsampling.
            diff = np.abs(slide.read_region(700, 300, 600, 500).astype(int) - tiff.read_region(700, 300, 600, 500).astype(int))
            assert diff.mean() < 2 and slide.thumbnail(512)[1] == 4.0


def test_same_slide_as_tiff_and_as_dicom_gives_the_same_mitotic_figures(made):
    from scipy.optimize import linear_sum_assignment

    a, pa = _figures(made["out"] / "slide.json")
    b, pb = _figures(made["out"] / "series.json")
    assert len(a) == len(b) > 0
    distance = np.linalg.norm(a[:, None] - b[None], axis=2)
    rows, cols = linear_sum_assignment(distance)
    assert distance[rows, cols].max() < 1 * UM, distance[rows, cols]
    assert np.abs(pa[rows] - pb[cols]).max() < 0.05


def _source_header(series: Path):
    import pydicom

    return pydicom.dcmread(ds.levels(series)[0], stop_before_pixels=True)


def test_annotation_object_read_back_by_highdicom(made):
    import highdicom as hd

    result = json.loads((made["out"] / "series.json").read_text())["points"]
    ann = hd.ann.annread(made["out"] / "series.dcm")
    source = _source_header(made["series"])
    assert ann.StudyInstanceUID == source.StudyInstanceUID
    assert ann.FrameOfReferenceUID == source.FrameOfReferenceUID
    assert ann.ReferencedSeriesSequence[0].SeriesInstanceUID == source.SeriesInstanceUID
    assert ann.SeriesInstanceUID != source.SeriesInstanceUID and ann.SOPInstanceUID != source.SOPInstanceUID
    to_pixels = hd.spatial.ReferenceToImageTransformer.for_image(source, for_total_pixel_matrix=True)
    spacing = np.array(open_slide(made["series"]).spacing_mm)
    groups = {g.label: g for g in ann.get_annotation_groups()}
    assert set(groups) == {"mitotic figure", "non-mitotic figure"}
    for label, group in groups.items():
        mine = [p for p in result if p["name"] == label]
        assert group.number_of_annotations == len(mine)  # one point per figure
        assert group.graphic_type == hd.ann.GraphicTypeValues.POINT
        xyz = np.concatenate(group.get_graphic_data(ann.AnnotationCoordinateType))
        names, values, _ = group.get_measurements()
        assert [n.meaning for n in names] == ["Probability"]
        assert values.ravel().tolist() == pytest.approx([p["probability"] for p in mine], abs=1e-7)
        px = to_pixels(xyz)[:, :2]
        mm = np.array([p["point"][:2] for p in mine])
        assert np.abs(px * spacing - mm).max() < 1e-3 * UM
        algorithm = group.algorithm_identification[0]
        assert algorithm.AlgorithmName == "midog"
        parameters = algorithm.AlgorithmParameters
        assert "operating point" in parameters and re.search(r"weights SHA-256=[0-9a-f]{64}", parameters)


def test_annotation_object_read_back_by_wsidicom_with_the_series(made):
    from wsidicom import WsiDicom

    files = [*sorted(made["series"].glob("*.dcm")), made["out"] / "series.dcm"]
    with WsiDicom.open(files) as wsi:
        [instance] = wsi.annotations
        counts = {g.label: len(g.annotations) for g in instance.groups}
    result = json.loads((made["out"] / "series.json").read_text())["points"]
    assert counts == {n: sum(p["name"] == n for p in result) for n in ("mitotic figure", "non-mitotic figure")}


def test_dciodvfy_reports_no_errors(made):
    if shutil.which("dciodvfy") is None:
        pytest.skip("dciodvfy is not installed (Debian: apt-get install dicom3tools)")
    proc = subprocess.run(["dciodvfy", str(made["out"] / "series.dcm")], capture_output=True, text=True, timeout=60)
    lines = (proc.stdout + proc.stderr).splitlines()
    for line in lines:  # the warnings, for whoever reads the test output
        print(line)
    assert any("MicroscopyBulkSimpleAnnotations" in line for line in lines), lines
    assert not [line for line in lines if line.startswith("Error")]


def test_later_export_gives_the_same_object_and_a_tiff_source_is_refused(made, tmp_path, capsys):
    import highdicom as hd

    later = tmp_path / "later.dcm"
    result = made["out"] / "series.json"
    assert main(["export", str(result), "--image", str(made["series"]), "--format", "dicom-ann", "-o", str(later)]) == 0
    a, b = hd.ann.annread(later), hd.ann.annread(made["out"] / "series.dcm")
    assert a.SOPInstanceUID == b.SOPInstanceUID  # derived from the result: re-exporting replaces, never duplicates
    assert a.AnnotationGroupSequence[0].DoublePointCoordinatesData == b.AnnotationGroupSequence[0].DoublePointCoordinatesData
    capsys.readouterr()
    tiff_result = made["out"] / "slide.json"
    assert main(["export", str(tiff_result), "--image", str(made["tiff"]), "--format", "dicom-ann", "-o", str(tmp_path / "no.dcm")]) == 1
    err = capsys.readouterr().err
    assert "slide.tiff" in err and "not one" in err and "wsidicomizer" in err
    assert not (tmp_path / "no.dcm").exists()


def test_sparse_and_concatenated_series_read_as_the_full_one(made, tmp_path):
    full = open_slide(made["series"]).read_region(0, 0, 2048, 1536)
    sparse = ds.copy_series(made["series"], tmp_path / "sparse")
    blank = ds.blank_frames(ds.levels(sparse)[0])
    assert 0 < len(blank) < 12
    ds.sparse_parts(ds.levels(sparse)[0], keep=lambda i: i not in blank)
    concat = ds.copy_series(made["series"], tmp_path / "concat")
    ds.concatenate(ds.levels(concat)[0])
    got = open_slide(sparse).read_region(0, 0, 2048, 1536)
    tissue = full.std(axis=2) > 0  # sparse frames read as white glass, the rest as stored
    stored = np.ones((1536, 2048), bool)
    for i in blank:
        r, c = divmod(i, 4)
        stored[r * 512 : (r + 1) * 512, c * 512 : (c + 1) * 512] = False
    assert (got[stored] == full[stored]).all() and (got[~stored] == 255).all() and tissue.any()
    assert (open_slide(concat).read_region(0, 0, 2048, 1536) == full).all()


def _hostile(made, root: Path) -> dict[str, tuple[Path, str, str]]:
    """name -> (input, the file the error must name, words of the problem)."""
    src, other = made["series"], made["small"]
    cases = {}
    t = ds.copy_series(src, root / "truncated")
    base = ds.levels(t)[0]
    ds.truncate(base)
    cases["truncated"] = (t, base.name, "truncated")
    t = ds.copy_series(src, root / "missing")
    ds.levels(t)[0].unlink()
    cases["missing"] = (t, ds.levels(t)[0].name, "full-resolution level is missing")
    t = ds.copy_series(src, root / "mixed")
    shutil.copy(ds.levels(other)[0], t / "stray.dcm")
    cases["mixed"] = (t, "stray.dcm", "two slides")
    t = ds.copy_series(src, root / "syntax")
    level = ds.levels(t)[1]
    ds.set_transfer_syntax(level, "1.2.840.10008.1.2.4.80")  # JPEG-LS label on JPEG bytes
    cases["syntax"] = (t, level.name, "transfer syntax")
    t = ds.copy_series(src, root / "relabelled")
    level = ds.levels(t)[0]
    ds.set_transfer_syntax(level, "1.2.840.10008.1.2.4.90")  # JPEG 2000 label on JPEG bytes
    cases["relabelled"] = (t, level.name, "wrong transfer syntax")
    t = ds.copy_series(src, root / "split")
    ds.sparse_parts(ds.levels(t)[0], parts=2)
    cases["split"] = (t, "split", "not one concatenation")
    return cases


def test_hostile_series_one_error_each_naming_the_file_and_the_next_image_runs(made, tmp_path, capsys):
    cases = _hostile(made, tmp_path)
    for name, (path, named, words) in cases.items():
        with pytest.raises(ImageError) as caught:
            open_slide(path)
        assert named in str(caught.value) and words in str(caught.value), (name, str(caught.value))
    capsys.readouterr()
    inputs = [str(p) for p, _, _ in cases.values()] + [str(made["small"])]
    out = tmp_path / "out"
    assert main(["detect", *inputs, "--weights", str(DEMO), "--no-progress", "-o", f"{out}/"]) == 1
    err = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(err) == len(cases) + 1, err  # one line per bad image, and the count of failures
    for (name, (path, named, _)), line in zip(cases.items(), err):
        assert named in line and "Traceback" not in line, (name, line)
    assert (out / "small.json").is_file() and not (out / "truncated.json").exists()


def test_batch_finds_a_dicom_slide_as_one_image_and_fingerprints_it(made, tmp_path):
    from midog.pipeline.inputs import collect_images, input_fingerprint

    data = tmp_path / "data"
    ds.copy_series(made["series"], data / "a")
    ds.copy_series(made["small"], data / "nested" / "b")
    shutil.copy(made["tiff"], data / "c.tiff")
    found = collect_images([str(data)])
    assert found == sorted([(data / "a").resolve(), (data / "nested" / "b").resolve(), (data / "c.tiff").resolve()])
    assert collect_images([str(data / "a")]) == [(data / "a").resolve()]
    bare = ds.copy_series(made["small"], tmp_path / "bare")
    for f in bare.glob("*.dcm"):  # archives often store DICOM files without an extension
        f.rename(f.with_suffix(""))
    shutil.copy(made["tiff"], bare / "beside.tiff")
    assert collect_images([str(bare)]) == sorted([bare.resolve(), (bare / "beside.tiff").resolve()])
    before = input_fingerprint(data / "a")
    assert before == input_fingerprint(data / "a") and before["files"] == 2
    ds.truncate(ds.levels(data / "a")[1], 0.9)
    assert input_fingerprint(data / "a") != before


def test_process_opens_a_dicom_slide_handed_over_as_a_folder(made, tmp_path):
    input_dir, output_dir = tmp_path / "in", tmp_path / "out"
    ds.copy_series(made["small"], input_dir / "slide")
    output_dir.mkdir()
    proc = subprocess.run(
        [sys.executable, str(ROOT / "process.py"), "--input", str(input_dir), "--output", str(output_dir), "--weights", str(DEMO)],
        capture_output=True, text=True, cwd=tmp_path, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    [case] = json.loads((output_dir / "results.json").read_text())
    assert case["error"] is None and case["filename"].startswith("slide/") and case["filename"].endswith(".dcm")
    assert json.loads((output_dir / "mitotic-figures.json").read_text())["type"] == "Multiple points"


def test_reading_threads_share_one_series(made):
    """The detector's reading threads read regions of one open slide at once (OpenSlide is
    thread-safe): the same pixels as one thread reading them in turn."""
    from concurrent.futures import ThreadPoolExecutor

    spots = [(x, y) for y in range(0, 1536 - 384, 384) for x in range(0, 2048 - 512, 512)]
    with open_slide(made["series"], readers=4) as slide:
        alone = [slide.read_region(x, y, 512, 384) for x, y in spots]
        with ThreadPoolExecutor(4) as pool:
            together = list(pool.map(lambda xy: slide.read_region(*xy, 512, 384), spots * 3))
    assert all((a == b).all() for a, b in zip(alone * 3, together))


def _detections(image: Path, n: int):
    from midog.detector.detections import Detections

    boxes = np.array([[100 + 60 * i, 200, 150 + 60 * i, 250] for i in range(n)], np.float32).reshape(-1, 4)
    return Detections(boxes, np.linspace(0.9, 0.2, n).astype(np.float32), np.ones(n, np.int64), (0.00025, 0.00025), image=image, image_size=(2048, 1536))


def test_a_tiff_source_refuses_dicom_ann_after_the_other_extras_and_no_points_write_nothing(made, tmp_path):
    from midog.results.writers import Extras, write_result

    target = tmp_path / "slide.json"
    with pytest.raises(ImageError, match="not one"):
        write_result(_detections(made["tiff"], 3), target, "2022", Extras(exports=("dicom-ann", "csv")))
    assert target.is_file() and target.with_suffix(".csv").is_file() and not target.with_suffix(".dcm").exists()
    empty = tmp_path / "series.json"
    empty.with_suffix(".dcm").write_bytes(b"an earlier run's object")
    note = write_result(_detections(made["series"], 0), empty, "2022", Extras(exports=("dicom-ann",)))
    assert note == "no dicom-ann (no points)" and not empty.with_suffix(".dcm").exists()


def test_spacing_is_the_files_mpp_overrides_it_and_a_missing_one_is_refused(made, tmp_path):
    import pydicom

    broken = ds.copy_series(made["series"], tmp_path / "broken")
    base = ds.levels(broken)[0]
    header = pydicom.dcmread(base)
    del header.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing
    header.save_as(base, enforce_file_format=True)
    for mpp in (None, 0.25):  # wsidicom places the levels by their spacing: --mpp cannot replace it
        with pytest.raises(ImageError, match=f"{re.escape(base.name)}: no usable PixelSpacing.*--mpp cannot"):
            open_slide(broken, mpp=mpp)
    assert open_slide(made["series"], mpp=0.3).spacing_mm == (0.0003, 0.0003)
