"""The public Python API: lazy exports from `midog`, the accessors of `Detections`, and
the README's example, run exactly as written."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT

from midog.detector.detections import Detections
from midog.results.challenge import multiple_points


def readme_example() -> str:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Python API", 1)[1]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert blocks, "README.md's Python API section has no ```python block"
    return blocks[0]


def test_readme_example_runs_as_written(vectors_dir, vector_weights, tmp_path, monkeypatch):
    # The example's files, as `midog fetch` lays them out, stood in for by the reference
    # vectors: their weights and a 512 px image whose reference output is known.
    (tmp_path / "weights").mkdir()
    (tmp_path / "test").mkdir()
    shutil.copy(vector_weights, tmp_path / "weights" / "RetinaNetDA.pth")
    shutil.copy(vectors_dir / "synthC_512x512.tiff", tmp_path / "test" / "007.tiff")
    monkeypatch.chdir(tmp_path)
    code = readme_example()
    assert len(code.strip().splitlines()) <= 5
    namespace: dict = {}
    exec(compile(code, "README.md (Python API)", "exec"), namespace)
    expected = json.loads((vectors_dir / "synthC_512x512.expected_2021.json").read_text())
    assert namespace["answer"] == expected
    found = namespace["found"]
    assert len(found.mitotic_figures()) == len(expected["points"]) > 0
    np.testing.assert_array_equal(found.mitotic_figures().xy_mm, [p["point"][:2] for p in expected["points"]])


def test_import_midog_is_light_and_exports_load_on_use():
    code = (
        "import sys, midog\n"
        "assert 'torch' not in sys.modules and 'numpy' not in sys.modules\n"
        "from midog import Detector, Detections, open_slide, DetectorConfig, REFERENCE\n"
        "import midog.detector.core, midog.slides.readers\n"
        "assert Detector is midog.detector.core.Detector and open_slide is midog.slides.readers.open_slide\n"
        "assert REFERENCE.threshold == 0.64 and 'Detector' in dir(midog)\n"
        "try:\n"
        "    midog.nothing\n"
        "except AttributeError:\n"
        "    pass\n"
        "else:\n"
        "    raise SystemExit('no AttributeError')\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=ROOT)


@pytest.fixture
def found() -> Detections:
    boxes = np.array([[100, 200, 150, 250], [10, 20, 61, 71], [0, 0, 50, 50]])
    scores = np.array([0.9, 0.64, 0.5], np.float32)
    return Detections(boxes, scores, np.zeros(3, int), (0.00025, 0.0002), threshold=0.6)


def test_fields_and_indexing(found):
    np.testing.assert_array_equal(found.xy_px, [[125, 225], [35.5, 45.5], [25, 25]])
    np.testing.assert_array_equal(found.xy_mm, [[125 * 0.00025, 225 * 0.0002], [35.5 * 0.00025, 45.5 * 0.0002], [25 * 0.00025, 25 * 0.0002]])
    # Indexing by a mask, indices or a slice keeps every per-candidate field in step.
    for keep in (found.scores > 0.6, [0, 1], slice(0, 2)):
        part = found[keep]
        assert len(part) == 2 and part.spacing_mm == found.spacing_mm and part.threshold == 0.6
        np.testing.assert_array_equal(part.boxes, found.boxes[:2])
        np.testing.assert_array_equal(part.xy_mm, found.xy_mm[:2])
        np.testing.assert_array_equal(part.mitotic, [True, True])
    assert found[found.scores > 0.95].xy_mm.shape == (0, 2)


def test_one_answer_to_is_it_mitotic(found):
    # Candidates strictly above the operating point, compared in float64 like the outputs.
    np.testing.assert_array_equal(found.mitotic, [True, True, False])
    assert found.class_names == ["mitotic figure", "mitotic figure", "non-mitotic figure"]
    figures = found.mitotic_figures()
    assert len(figures) == 2 and figures.threshold == 0.6
    np.testing.assert_array_equal(figures.scores, np.array([0.9, 0.64], np.float32))
    stricter = found.at_threshold(0.7)
    assert stricter.threshold == 0.7 and len(stricter.mitotic_figures()) == 1
    assert stricter.class_names == ["mitotic figure", "non-mitotic figure", "non-mitotic figure"]
    # A result file's names decide for points read from it, until a threshold renames them.
    named = Detections(found.boxes, found.scores, found.classes, found.spacing_mm, names=["mitotic figure", "hard negative", "mitotic figure"],
                       mitotic=np.array([True, False, True]))
    assert named.class_names == ["mitotic figure", "hard negative", "mitotic figure"]
    assert named[1:].class_names == ["hard negative", "mitotic figure"]
    assert named.at_threshold(0.6).class_names == found.class_names


def test_json_in_each_style(found):
    assert [p["name"] for p in multiple_points(found, "2022")["points"]] == found.class_names
    assert [p["probability"] for p in multiple_points(found, "2022")["points"]] == found.scores.tolist()
    assert len(multiple_points(found, "2021")["points"]) == 2
    assert len(multiple_points(found.at_threshold(0.7), "2021")["points"]) == 1
    with pytest.raises(ValueError):
        multiple_points(found, "2020")
