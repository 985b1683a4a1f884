"""`midog count` on crafted predictions: the right figures count, the tissue area is right,
and the hotspot is the exact maximum (the brute force of test_hotspot agrees)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import tifffile
from test_hotspot import brute_force

from midog.commands.cli import main
from midog.results.count import mitotic_score, score_cutoffs
from midog.results.hotspot import TissueMap, count_in_region

SPACING = (0.001, 0.00099)  # mm per px, x and y differ (within the 2 % that is accepted): spacing is used per axis
SIZE = (2000, 1212)  # px -> 2.0 x 1.2 mm
TISSUE_RIGHT_MM = 1.5  # glass to the right of this


def write_image(path: Path, size: tuple[int, int] = SIZE) -> Path:
    rng = np.random.default_rng(0)
    w, h = size
    img = np.empty((h, w, 3), np.uint8)
    img[:] = (200, 110, 180)  # eosin/haematoxylin-ish pink: tissue
    img[:, :, :] += rng.integers(0, 12, (h, w, 1), dtype=np.uint8)
    img[:, round(TISSUE_RIGHT_MM / SPACING[0]) :] = 242  # glass
    res = (10 / SPACING[0], 10 / SPACING[1])  # pixels per cm
    tifffile.imwrite(path, img, photometric="rgb", resolution=res, resolutionunit="CENTIMETER", tile=(256, 256))
    return path


def crafted_points(rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {
        "cluster": rng.normal([0.5, 0.6], 0.06, (15, 2)),  # dense mitotic figures
        "lookalikes": rng.normal([1.1, 0.6], 0.03, (40, 2)),  # denser, but not mitotic
        "scattered": rng.uniform([0.02, 0.02], [1.45, 1.18], (10, 2)),  # mitotic, in tissue
        "on_glass": rng.uniform([1.6, 0.1], [1.95, 1.1], (6, 2)),  # mitotic, but not in tissue
    }


def result_json(groups: dict[str, np.ndarray], style: str) -> dict:
    points = []
    for key, xy in groups.items():
        mitotic = key != "lookalikes"
        for x, y in xy:
            if style == "2021":
                if mitotic:
                    points.append({"point": [float(x), float(y), 0]})
            else:
                name = "mitotic figure" if mitotic else "non-mitotic figure"
                points.append({"point": [float(x), float(y), 0], "probability": 0.9 if mitotic else 0.5, "name": name})
    out = {"type": "Multiple points", "points": points, "version": {"major": 1, "minor": 0}}
    if style == "2025":
        out["name"] = "Points of interest"
    return out


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> Path:
    return write_image(tmp_path_factory.mktemp("count") / "region.tiff")


@pytest.mark.parametrize("style", ["2021", "2022", "2025"])
@pytest.mark.parametrize("shape", ["circle", "square"])
def test_crafted_predictions(style, shape, image, tmp_path, capsys):
    groups = crafted_points(np.random.default_rng(1))
    pred = tmp_path / "pred.json"
    pred.write_text(json.dumps(result_json(groups, style)))
    out = tmp_path / "count.json"
    area = 0.25
    assert main(["count", str(pred), "--image", str(image), "--area-mm2", str(area), "--shape", shape, "-o", str(out)]) == 0
    summary = json.loads(out.read_text())

    figures = np.concatenate([groups["cluster"], groups["scattered"]])
    assert summary["mitotic_figures"] == len(figures)
    assert summary["tissue_area_mm2"] == pytest.approx(TISSUE_RIGHT_MM * 1.2, rel=1e-3)
    assert summary["per_mm2"] == pytest.approx(len(figures) / summary["tissue_area_mm2"])

    spot = summary["hotspot"]
    tissue = TissueMap(np.array([[True, True, True, False]]), (0.5, 1.2), (2.0, 1.2))  # the image's tissue
    assert spot["count"] == brute_force(figures, tissue, shape, area)
    center = np.array(spot["center_mm"])
    # The region around the reported centre holds that many figures, the look-alikes' cluster
    # is not the hotspot, and the centre lies in tissue.
    assert count_in_region(figures, center, shape, area) == spot["count"]
    assert np.linalg.norm(center - [0.5, 0.6]) < 0.2
    assert center[0] <= TISSUE_RIGHT_MM
    assert spot["center_px"] == pytest.approx([center[0] / SPACING[0], center[1] / SPACING[1]])
    assert spot["shape"] == shape and spot["area_mm2"] == area
    assert summary["score"] == mitotic_score(spot["count"], area)


def test_figures_on_glass_count_nowhere(image, tmp_path):
    # Figures right of the tissue edge are not in tissue: neither counted nor in the hotspot,
    # even where a region centred on the tissue edge would reach them.
    xy = np.array([[1.5 + 0.1, 0.6]] * 3 + [[1.9, 0.6]] * 5)
    pred = tmp_path / "pred.json"
    pred.write_text(json.dumps({"type": "Multiple points", "points": [{"point": [*p, 0]} for p in xy]}))
    out = tmp_path / "c.json"
    assert main(["count", str(pred), "--image", str(image), "--area-mm2", "0.25", "-o", str(out)]) == 0
    summary = json.loads(out.read_text())
    assert summary["mitotic_figures"] == 0  # none of them lies in tissue
    assert summary["hotspot"]["count"] == 0


def test_field_diameter_and_fields_set_the_area(image, tmp_path):
    pred = tmp_path / "pred.json"
    pred.write_text(json.dumps(result_json(crafted_points(np.random.default_rng(2)), "2021")))
    out = tmp_path / "c.json"
    assert main(["count", str(pred), "--image", str(image), "--field-diameter-mm", "0.2", "--fields", "4", "-o", str(out)]) == 0
    assert json.loads(out.read_text())["hotspot"]["area_mm2"] == pytest.approx(4 * math.pi * 0.01)
    code = main(["count", str(pred), "--image", str(image), "--field-diameter-mm", "0.2", "--area-mm2", "2"])
    assert code == 1


def test_score_table():
    # Elston & Ellis's own field (10 x 0.274 mm²): 0-9, 10-19, 20+.
    assert score_cutoffs(2.74) == (10, 20)
    assert [mitotic_score(n, 2.74) for n in (0, 9, 10, 19, 20)] == [1, 1, 2, 2, 3]
    # 2 mm² (the WHO / MIDOG area): 0-7, 8-14, 15+.
    assert score_cutoffs(2.0) == (8, 15)
    assert [mitotic_score(n, 2.0) for n in (7, 8, 14, 15)] == [1, 2, 2, 3]


def test_missing_image_is_a_clear_error(tmp_path, capsys):
    pred = tmp_path / "pred.json"
    pred.write_text(json.dumps({"type": "Multiple points", "points": []}))
    assert main(["count", str(pred), "--image", str(tmp_path / "nope.tiff")]) == 1
    assert "nope.tiff: file not found" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text('{"points": [{"point": "here"}]}')
    assert main(["count", str(bad), "--image", str(tmp_path / "nope.tiff")]) == 1


def test_whole_slide_image(tmp_path):
    """A pyramidal slide: the mask comes from a pyramid level; figures on glass do not count."""
    from midog.results.count import THUMBNAIL_SIDE, CountOptions, count
    from midog.results.overlay import draw_overlay, output_size
    from midog.results.reader import read_result_on
    from midog.slides.readers import open_slide
    from midog.synth import make_slide

    path = tmp_path / "slide.tiff"
    regions = make_slide(path, 8192, 6144, seed=1, n_regions=2, region_size=1024, levels=3)
    rng = np.random.default_rng(0)
    (ax, ay, size), _ = regions
    dense = []  # 12 figures close together, each amid clearly stained pixels (the synthetic tissue has pale gaps)
    with open_slide(path) as slide:
        assert slide.is_whole_slide
        spacing = slide.spacing_mm
        for x, y in rng.uniform([ax + 350, ay + 350], [ax + 650, ay + 650], (400, 2)):
            patch = slide.read_region(int(x) - 16, int(y) - 16, 32, 32).astype(int)
            if len(dense) < 12 and (patch.max(2) - patch.min(2)).min() > 30 and patch.mean(2).max() < 220:
                dense.append((x, y))
    assert len(dense) == 12
    glass = np.array([[100.0, 100.0], [8000.0, 200.0], [200.0, 6000.0]])
    xy = np.concatenate([dense, glass]) * spacing
    result_file = tmp_path / "slide.json"
    result_file.write_text(json.dumps({"type": "Multiple points", "points": [{"point": [x, y, 0]} for x, y in xy.tolist()]}))
    picture = tmp_path / "slide.png"
    result = count(read_result_on(result_file, path, thumbnail_side=THUMBNAIL_SIDE), CountOptions(0.05))
    draw_overlay(result, picture)
    s = result.summary
    assert s["mitotic_figures"] == 12
    nominal = 2 * size * size * spacing[0] * spacing[1]
    assert 0.6 * nominal < s["tissue_area_mm2"] <= nominal * 1.01  # synthetic tissue has pale gaps
    assert s["hotspot"]["count"] == 12
    cx, cy = s["hotspot"]["center_px"]
    assert ax + 250 < cx < ax + 750 and ay + 250 < cy < ay + 750
    from PIL import Image

    assert Image.open(picture).size == output_size((8192, 6144), spacing)
