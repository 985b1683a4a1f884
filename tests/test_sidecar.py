"""Results remember the spacing they were made at (<stem>.midog.json), and QuPath exports
follow QuPath's cropping of OpenSlide slides to their bounds.

`midog detect --mpp 0.5` then `midog export` without --mpp gives the pixels of the export
made during detection; an --mpp or an image that disagrees is refused or named, never
silently rescaled. A slide whose reader reports bounds (OpenSlide's bounds-x/-y) gets QuPath
exports shifted by that offset, while the JSON, the CSV and ASAP stay in level-0 pixels.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
from test_count import write_image

from midog.commands.cli import main
from midog.results.sidecar import read_info, sidecar_path

BOUNDS = (300, 200)  # level-0 offset of the synthetic slide's non-empty region


@pytest.fixture(scope="module")
def detected(random_weights, tmp_path_factory) -> tuple[Path, Path]:
    """(image, result) of `midog detect --mpp 0.5` with exports, on an image whose own
    spacing is 1 um/px: the case where a later export used to rescale every point."""
    folder = tmp_path_factory.mktemp("sidecar")
    image = write_image(folder / "region.tiff", (600, 500))
    out = folder / "run" / "region.json"
    args = ["detect", str(image), "--weights", str(random_weights), "-o", str(out), "--device", "cpu", "--no-progress", "--mpp", "0.5"]
    args += ["--style", "2022", "--threshold", "0.01", "--export", "csv", "--export", "geojson"]
    assert main(args) == 0
    return image, out


def rows(path: Path) -> list[dict]:
    with path.open() as f:
        return list(csv.DictReader(f))


def test_detect_writes_the_sidecar(detected, random_weights):
    import hashlib

    image, result = detected
    info = read_info(result)
    assert info.spacing_mm == (0.0005, 0.0005) and info.size_px == (600, 500) and info.offset_px == (0, 0)
    assert info.weights_sha256 == hashlib.sha256(random_weights.read_bytes()).hexdigest()
    assert info.threshold == 0.01 and info.style == "2022" and info.image == "region.tiff"
    assert len(json.loads(result.read_text())["points"]) > 0  # something to compare below


def test_export_later_gives_the_pixels_of_the_export_made_during_detection(detected, tmp_path, capsys):
    image, result = detected
    for fmt, suffix in (("csv", ".csv"), ("geojson", ".geojson")):
        for source in ([], ["--image", str(image)], ["--mpp", "0.5"]):
            later = tmp_path / f"later{suffix}"
            assert main(["export", str(result), *source, "--format", fmt, "-o", str(later)]) == 0
            assert later.read_text() == result.with_suffix(suffix).read_text(), (fmt, source)
    assert "says 1 x 0.99 µm/px, but the result was made at 0.5 µm/px" in capsys.readouterr().err  # --image: named, not used


def test_a_disagreeing_mpp_or_image_is_refused(detected, tmp_path, capsys):
    image, result = detected
    assert main(["export", str(result), "--mpp", "0.25", "--format", "csv", "-o", str(tmp_path / "x.csv")]) == 2
    err = capsys.readouterr().err
    assert "made at 0.5 µm/px" in err and "--mpp 0.25 would rescale them" in err
    other = write_image(tmp_path / "other.tiff", (700, 500))
    assert main(["export", str(result), "--image", str(other), "--format", "csv", "-o", str(tmp_path / "x.csv")]) == 2
    assert "600 x 500 px" in capsys.readouterr().err
    assert not (tmp_path / "x.csv").exists()


def test_count_uses_the_recorded_spacing(detected, tmp_path):
    image, result = detected
    out = tmp_path / "count.json"
    assert main(["count", str(result), "--image", str(image), "-o", str(out), "--area-mm2", "0.01"]) == 0
    summary = json.loads(out.read_text())
    assert summary["spacing_mm"] == [0.0005, 0.0005]
    assert summary["tissue_area_mm2"] < 600 * 500 * 0.0005**2 * 1.01  # the image at 0.5 um/px, not 1


def test_broken_sidecar_is_named(tmp_path, capsys):
    result = tmp_path / "r.json"
    result.write_text(json.dumps({"type": "Multiple points", "points": [], "version": {"major": 1, "minor": 0}}))
    sidecar_path(result).write_text('{"format": "midog result info", "spacing_mm": [0, 1]}')
    assert main(["export", str(result), "--format", "csv"]) == 1
    assert "r.midog.json: malformed result info" in capsys.readouterr().err


def test_evaluation_skips_what_midog_writes_beside_results(detected):
    from midog.evaluation.io import read_predictions

    _, result = detected
    assert set(read_predictions(result.parent)) == {"region"}


@pytest.fixture()
def bounded_slide(tmp_path, monkeypatch) -> Path:
    """A slide read through OpenSlide whose reader reports bounds, as MRXS and SCN slides do:
    a tiled TIFF that OpenSlide reads (generic-tiff), with OpenSlide's bounds properties added."""
    import openslide

    rng = np.random.default_rng(0)
    pixels = np.full((1000, 1200, 3), 240, np.uint8)
    pixels[200:800, 300:1000] = (200, 110, 180) + rng.integers(0, 12, (600, 700, 1), dtype=np.uint8)
    path = tmp_path / "bounded.svs"  # a vendor suffix: midog reads it through OpenSlide, as QuPath does
    tifffile.imwrite(path, pixels, photometric="rgb", tile=(256, 256), resolution=(40000, 40000), resolutionunit="CENTIMETER")
    extra = {"openslide.bounds-x": str(BOUNDS[0]), "openslide.bounds-y": str(BOUNDS[1]), "openslide.bounds-width": "700", "openslide.bounds-height": "600"}

    class Bounded(openslide.OpenSlide):
        @property
        def properties(self):  # type: ignore[override]
            return {**super().properties, **extra}

    monkeypatch.setattr(openslide, "OpenSlide", Bounded)
    return path


def test_qupath_exports_follow_the_bounds(bounded_slide, tmp_path):
    from midog.slides.readers import open_slide
    from midog.slides.wsi import OpenSlideSlide

    with open_slide(bounded_slide) as slide:
        assert isinstance(slide, OpenSlideSlide) and slide.offset_px == BOUNDS
        spacing = slide.spacing_mm
    xy_px = np.array([[400.0, 300.0], [900.5, 750.25]])
    result = tmp_path / "bounded.json"
    points = [{"point": [x * spacing[0], y * spacing[1], 0], "probability": 0.9, "name": "mitotic figure"} for x, y in xy_px]
    result.write_text(json.dumps({"type": "Multiple points", "points": points, "version": {"major": 1, "minor": 0}}))

    def exported(fmt: str, *extra: str) -> Path:
        out = tmp_path / f"out-{fmt}-{len(extra)}"
        assert main(["export", str(result), "--image", str(bounded_slide), "--format", fmt, "-o", str(out), *extra]) == 0
        return out

    shifted = xy_px - BOUNDS
    geo = [f["geometry"]["coordinates"] for f in json.loads(exported("geojson").read_text())["features"]]
    assert np.allclose(geo, shifted)
    tsv = [line.split("\t")[:2] for line in exported("qupath-points").read_text().splitlines()[1:]]
    assert np.allclose(np.array(tsv, float), shifted)
    off = [f["geometry"]["coordinates"] for f in json.loads(exported("geojson", "--qupath-bounds", "off").read_text())["features"]]
    assert np.allclose(off, xy_px)
    level0 = [[float(r["x_px"]), float(r["y_px"])] for r in rows(exported("csv"))]
    assert np.allclose(level0, xy_px)  # CSV and ASAP: level-0, ASAP does not crop
    assert json.loads(result.read_text())["points"] == points  # the challenge JSON stays level-0 mm


def test_detect_records_the_bounds(bounded_slide, random_weights, tmp_path):
    out = tmp_path / "run" / "bounded.json"
    assert main(["detect", str(bounded_slide), "--weights", str(random_weights), "-o", str(out), "--device", "cpu", "--no-progress", "--all-tiles"]) == 0
    assert read_info(out).offset_px == BOUNDS
