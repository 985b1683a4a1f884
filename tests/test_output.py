"""Output is Grand Challenge's "Multiple points" in millimetres, valid against its schema."""

from __future__ import annotations

import json

import jsonschema
import numpy as np
import pytest
from conftest import SHARED, need_shared

from midog.detector.detections import Detections
from midog.atomic import write_json_atomic
from midog.results.challenge import multiple_points


@pytest.fixture()
def schema() -> dict:
    return json.loads(need_shared(SHARED / "schemas" / "multiple-points.schema.json").read_text())


def sample() -> Detections:
    boxes = np.array([[100, 200, 110, 212], [0, 0, 20, 21], [40, 40, 50, 50]])
    return Detections(boxes, np.array([0.9, 0.7, 0.5], np.float32), np.zeros(3, int), (0.00025, 0.0002))


def test_2021_style_lists_points_above_threshold_in_mm(schema):
    out = multiple_points(sample(), "2021")
    jsonschema.validate(out, schema)
    assert out["points"] == [{"point": [105 * 0.00025, 206 * 0.0002, 0]}, {"point": [10 * 0.00025, 10.5 * 0.0002, 0]}]


def test_2022_style_names_every_candidate(schema):
    out = multiple_points(sample(), "2022")
    jsonschema.validate(out, schema)
    assert [p["name"] for p in out["points"]] == ["mitotic figure", "mitotic figure", "non-mitotic figure"]
    assert out["points"][2]["probability"] == float(np.float32(0.5))


def test_schema_rejects_extra_point_keys(schema):
    out = multiple_points(sample(), "2021")
    out["points"][0]["score"] = 1
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(out, schema)


def test_atomic_write_leaves_no_temporary_files(tmp_path):
    target = tmp_path / "sub" / "out.json"
    write_json_atomic(target, {"a": 1})
    write_json_atomic(target, {"a": 2})
    assert json.loads(target.read_text()) == {"a": 2}
    assert [p.name for p in target.parent.iterdir()] == ["out.json"]
