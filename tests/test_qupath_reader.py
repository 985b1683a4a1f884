"""The QuPath exports read by QuPath's own code: `PathIO.readObjects` (File > Import objects
from file) and `PointIO.readPoints` (the Counting tool's Load points), through the small
program tests/qupath/ReadExports.java.

It needs a JDK and QuPath's core classes: set MIDOG_QUPATH_CLASSPATH to a classpath holding
qupath-core (0.5.1, built from its source) and its dependencies (gson, jts-core,
commons-math3, picocli, guava, slf4j-api, ImageJ's ij.jar). Without it the test skips.
Built here: qupath-core's sources of tag v0.5.1 compiled with `javac -sourcepath` together
with ReadExports.java, against those jars.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from midog.commands.cli import main

PROBE = Path(__file__).resolve().parent / "qupath" / "ReadExports.java"
POINTS = [
    {"point": [0.5, 0.24, 0], "probability": 0.9137215614318848, "name": "mitotic figure"},
    {"point": [1.25, 0.8, 0], "probability": 0.52, "name": "non-mitotic figure"},
    {"point": [0.7, 1.1, 0], "probability": 0.7, "name": "mitotic figure: atypical"},
]
SPACING_MM = 0.00025


@pytest.fixture(scope="module")
def qupath(tmp_path_factory) -> tuple[str, Path]:
    classpath = os.environ.get("MIDOG_QUPATH_CLASSPATH")
    if not classpath:
        pytest.skip("set MIDOG_QUPATH_CLASSPATH to QuPath's core classes and their dependencies to read the exports with QuPath's code")
    if shutil.which("javac") is None or shutil.which("java") is None:
        pytest.skip("no JDK (javac, java) on PATH")
    out = tmp_path_factory.mktemp("qupath-probe")
    subprocess.run(["javac", "-nowarn", "-d", str(out), "-cp", classpath, str(PROBE)], check=True, capture_output=True, timeout=600)
    return classpath, out


def read_with_qupath(qupath: tuple[str, Path], *files: Path) -> dict[str, list[list[str]]]:
    classpath, classes = qupath
    done = subprocess.run(["java", "-cp", f"{classes}{os.pathsep}{classpath}", "ReadExports", *map(str, files)],
                          check=True, capture_output=True, text=True, timeout=300)
    objects: dict[str, list[list[str]]] = {}
    for line in done.stdout.splitlines():
        if line.startswith("FILE "):
            current = objects.setdefault(line.split()[1], [])
        elif line.strip():
            current.append(line.split("\t"))
    return objects


def result(path: Path, second_probability: float) -> Path:
    points = [dict(p) for p in POINTS]
    points[1]["probability"] = second_probability
    path.write_text(json.dumps({"type": "Multiple points", "points": points, "version": {"major": 1, "minor": 0}}))
    return path


def test_qupath_reads_annotations_detections_and_counting_points(qupath, tmp_path):
    a, b = result(tmp_path / "a.json", 0.52), result(tmp_path / "b.json", 0.53)  # two results of one image
    for r in (a, b):
        assert main(["export", str(r), "--mpp", "0.25", "--format", "geojson"]) == 0
    det = tmp_path / "a.det.geojson"
    assert main(["export", str(a), "--mpp", "0.25", "--format", "geojson", "--qupath-objects", "detection", "-o", str(det)]) == 0
    assert main(["export", str(a), "--mpp", "0.25", "--format", "qupath-points"]) == 0
    read = read_with_qupath(qupath, a.with_suffix(".geojson"), b.with_suffix(".geojson"), det, tmp_path / "a.points.tsv")
    annotations, others, detections, counted = (read[str(p)] for p in (a.with_suffix(".geojson"), b.with_suffix(".geojson"), det, tmp_path / "a.points.tsv"))
    for rows in (annotations, detections):
        assert len(rows) == 3
        for row, p in zip(rows, POINTS):
            kind, cls, colour, probability, _, roi, area, _, x, y, _ = row
            assert cls.endswith("|parent=none")  # one class, never a sub-class, even with ":"
            assert cls.split("|")[0] == p["name"].replace(": ", " - ")
            assert colour != "none"
            assert float(probability) == pytest.approx(p["probability"], rel=1e-6)  # QuPath keeps measurements as float32
            assert [float(x), float(y)] == pytest.approx([p["point"][0] / SPACING_MM, p["point"][1] / SPACING_MM], abs=1e-6)
    assert {r[0] for r in annotations} == {"annotation"} and {r[5] for r in annotations} == {"Points"}
    assert {r[0] for r in detections} == {"detection"} and all(float(r[6]) > 0 for r in detections)  # drawn when zoomed out
    assert not {r[4] for r in annotations} & {r[4] for r in others}  # ids differ between the two results
    assert not {r[4] for r in annotations} & {r[4] for r in detections}
    assert sorted(r[1].split("|")[0] for r in counted) == sorted(p["name"].replace(": ", " - ") for p in POINTS)
