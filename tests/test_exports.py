"""Exports hold the result's points at mm / spacing (per axis), with classes and
probabilities, in the structures QuPath (GeoJSON) and ASAP (XML) read."""

from __future__ import annotations

import csv
import json
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from test_count import SPACING, write_image

from midog.commands.cli import main
from midog.results import exports

POINTS = [
    {"point": [0.5, 0.24, 0], "probability": 0.91, "name": "mitotic figure"},
    {"point": [1.25, 0.8, 0], "probability": 0.52, "name": "non-mitotic figure"},
    {"point": [0.001, 1.1, 0], "probability": 0.7, "name": "mitotic figure"},
]


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> Path:
    return write_image(tmp_path_factory.mktemp("exports") / "region.tiff")


@pytest.fixture()
def result(tmp_path) -> Path:
    path = tmp_path / "result.json"
    path.write_text(json.dumps({"name": "Points of interest", "type": "Multiple points", "points": POINTS, "version": {"major": 1, "minor": 0}}))
    return path


def expected_px() -> np.ndarray:
    return np.array([p["point"][:2] for p in POINTS]) / np.array(SPACING)


def export(result: Path, fmt: str, *source: str) -> Path:
    out = result.with_name("out" + exports.FORMATS[fmt])
    assert main(["export", str(result), *source, "--format", fmt, "-o", str(out)]) == 0
    return out


def test_geojson_is_qupath_point_annotations(result, image):
    data = json.loads(export(result, "geojson", "--image", str(image)).read_text())
    assert data["type"] == "FeatureCollection"
    features = data["features"]
    assert len(features) == len(POINTS)
    ids = [uuid.UUID(f["id"]) for f in features]
    assert len(set(ids)) == len(ids)
    for f, p, xy in zip(features, POINTS, expected_px()):
        assert f["type"] == "Feature" and f["geometry"]["type"] == "Point"
        assert f["geometry"]["coordinates"] == pytest.approx(xy)
        props = f["properties"]
        assert props["objectType"] == "annotation"  # drawn by QuPath at every zoom
        assert props["classification"]["name"] == p["name"] and "name" not in props
        colour = props["classification"]["color"]
        assert len(colour) == 3 and all(isinstance(c, int) and 0 <= c <= 255 for c in colour)
        assert props["measurements"]["probability"] == p["probability"]
    assert features[0]["properties"]["classification"]["color"] != features[1]["properties"]["classification"]["color"]


def test_geojson_detections_are_circles_with_area(result, image):
    out = result.with_name("det.geojson")
    assert main(["export", str(result), "--image", str(image), "--format", "geojson", "--qupath-objects", "detection", "-o", str(out)]) == 0
    for f, xy in zip(json.loads(out.read_text())["features"], expected_px()):
        assert f["properties"]["objectType"] == "detection"
        assert f["geometry"]["type"] == "Polygon"
        ring = np.array(f["geometry"]["coordinates"][0])
        assert (ring[0] == ring[-1]).all() and len(ring) > 8
        x, y = ring[:, 0], ring[:, 1]
        area = 0.5 * abs(np.dot(x[:-1], y[1:]) - np.dot(x[1:], y[:-1]))  # shoelace, px²
        diameter_px = 0.0125 / SPACING[0]  # a MIDOG label's 50 px box at 0.25 um/px
        assert area == pytest.approx(np.pi * diameter_px**2 / 4 * SPACING[0] / SPACING[1], rel=0.03) and area > 0
        assert ring[:-1].mean(0) == pytest.approx(xy)


def test_ids_differ_between_results_of_one_image_and_repeat_within_one(result, image, tmp_path):
    first = [f["id"] for f in json.loads(export(result, "geojson", "--image", str(image)).read_text())["features"]]
    again = [f["id"] for f in json.loads(export(result, "geojson", "--image", str(image)).read_text())["features"]]
    other = tmp_path / "other.json"
    data = json.loads(result.read_text())
    data["points"][0]["probability"] = 0.92  # another model's result of the same image
    other.write_text(json.dumps(data))
    second = [f["id"] for f in json.loads(export(other, "geojson", "--image", str(image)).read_text())["features"]]
    assert first == again
    assert not set(first) & set(second)


def test_class_names_with_a_colon_stay_one_qupath_class(tmp_path, image):
    path = tmp_path / "colon.json"
    points = [{"point": [0.5, 0.5, 0], "probability": 0.8, "name": "mitotic figure: atypical"}]
    path.write_text(json.dumps({"type": "Multiple points", "points": points, "version": {"major": 1, "minor": 0}}))
    (feature,) = json.loads(export(path, "geojson", "--image", str(image)).read_text())["features"]
    assert feature["properties"]["classification"]["name"] == "mitotic figure - atypical"
    assert feature["properties"]["name"] == "mitotic figure: atypical"  # nothing is lost
    lines = export(path, "qupath-points", "--image", str(image)).read_text().splitlines()
    assert lines[1].split("\t")[2] == "mitotic figure - atypical"


def test_counting_tool_points(result, image):
    out = export(result, "qupath-points", "--image", str(image))
    assert out.name.endswith(".tsv")  # QuPath's Load points accepts .tsv (and .zip) only
    lines = out.read_text().splitlines()
    assert lines[0].split("\t") == ["x", "y", "class", "color"]  # PointIO's own column names
    for line, p, xy in zip(lines[1:], POINTS, expected_px()):
        x, y, name, packed = line.split("\t")
        assert [float(x), float(y)] == pytest.approx(xy) and name == p["name"]
        r, g, b = exports.colour(p["name"])
        assert int(packed) & 0xFFFFFF == r << 16 | g << 8 | b
        assert -(2**31) <= int(packed) < 0  # Java's signed ARGB, opaque


def test_asap_xml_declares_every_group_it_uses(result, image):
    root = ET.parse(export(result, "asap", "--image", str(image))).getroot()
    assert root.tag == "ASAP_Annotations"
    groups = {g.get("Name") for g in root.find("AnnotationGroups").findall("Group")}
    annotations = root.find("Annotations").findall("Annotation")
    assert len(annotations) == len(POINTS)
    for a, p, xy in zip(annotations, POINTS, expected_px()):
        assert a.get("Type") == "Dot"
        assert a.get("PartOfGroup") == p["name"] and a.get("PartOfGroup") in groups
        (coord,) = a.find("Coordinates").findall("Coordinate")
        assert coord.get("Order") == "0"
        assert [float(coord.get("X")), float(coord.get("Y"))] == pytest.approx(xy)
        assert f"(p={p['probability']!r})" in a.get("Name")  # full precision: reads back as the same number
    assert groups == {"mitotic figure", "non-mitotic figure"}


def test_csv_columns_and_values(result, image):
    with export(result, "csv", "--image", str(image)).open() as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["x_px", "y_px", "x_mm", "y_mm", "probability", "label"]
    for row, p, xy in zip(rows, POINTS, expected_px()):
        assert [float(row["x_px"]), float(row["y_px"])] == pytest.approx(xy)
        assert [float(row["x_mm"]), float(row["y_mm"])] == pytest.approx(p["point"][:2])
        assert float(row["probability"]) == p["probability"] and row["label"] == p["name"]


def test_2021_points_without_image_via_mpp(tmp_path):
    path = tmp_path / "r2021.json"
    path.write_text(json.dumps({"type": "Multiple points", "points": [{"point": [0.25, 0.5, 0]}]}))
    with export(path, "csv", "--mpp", "0.25").open() as f:
        (row,) = list(csv.DictReader(f))
    assert float(row["x_px"]) == pytest.approx(1000) and float(row["y_px"]) == pytest.approx(2000)
    assert row["probability"] == "" and row["label"] == "mitotic figure"
    feature = json.loads(export(path, "geojson", "--mpp", "0.25").read_text())["features"][0]
    assert "measurements" not in feature["properties"]
    assert feature["properties"]["classification"]["name"] == "mitotic figure"


def test_export_errors_are_clear(result, tmp_path, capsys):
    assert main(["export", str(result), "--format", "csv"]) == 1
    assert "--image" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "none.json"), "--mpp", "0.25", "--format", "csv"]) == 1
    assert "none.json: result file not found" in capsys.readouterr().err


def test_detect_writes_exports_and_count_beside_the_json(random_weights, tmp_path, capsys):
    image = write_image(tmp_path / "region.tiff", (600, 500))  # one tile: the network's time is not the point
    out = tmp_path / "run" / "region.json"
    args = ["detect", str(image), "--weights", str(random_weights), "-o", str(out), "--device", "cpu", "--no-progress"]
    args += ["--style", "2022", "--export", "geojson", "--export", "asap", "--export", "csv", "--count", "--overlay", "--area-mm2", "0.1"]
    assert main(args) == 0
    n = len(json.loads(out.read_text())["points"])
    assert len(json.loads(out.with_suffix(".geojson").read_text())["features"]) == n
    assert len(ET.parse(out.with_suffix(".xml")).getroot().find("Annotations")) == n
    assert len(out.with_suffix(".csv").read_text().splitlines()) == n + 1
    count = json.loads((out.parent / "region.count.json").read_text())
    assert count["hotspot"]["area_mm2"] == 0.1
    assert (out.parent / "region.overlay.png").stat().st_size > 0
    assert main(["detect", str(image), "--weights", str(random_weights), "--overlay"]) == 1
    assert "--count" in capsys.readouterr().err
