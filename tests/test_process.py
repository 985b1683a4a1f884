"""process.py, the Grand Challenge entry point, without Docker: both input layouts on the
reference vectors (exact expected JSON, platform schema), a bad image beside good ones, the
weights choice (/opt/ml/model override) and the style override."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from conftest import ROOT, SHARED, VECTOR_NAMES, VECTOR_SPACING_MM
from test_parity import explain_differences, expected_scores

sys.path.insert(0, str(ROOT))
import process  # noqa: E402  (top-level module of the project, not a package)

SCHEMA = SHARED / "schemas" / "multiple-points.schema.json"
SMALL = "synthC_512x512"  # one tile: the quickest vector


def check_schema(result: dict[str, Any]) -> None:
    if not SCHEMA.is_file():
        return  # test_results_match_platform_schema reports the skip
    import jsonschema

    jsonschema.validate(result, json.loads(SCHEMA.read_text()))


SPACING_MM = VECTOR_SPACING_MM


def expected(vectors_dir: Path, name: str, style: str) -> str:
    return (vectors_dir / f"{name}.expected_{style}.json").read_text()


def assert_reproduces(ours: dict[str, Any] | str | Path, vectors_dir: Path, name: str, style: str) -> None:
    """The vector's expected JSON, under the same contract as the core's parity test
    (tests/test_parity.py): identical, or only the README's tolerated edge cases, with 2022
    probabilities within 1e-4 (the core's float32 kernels differ from the reference's by ~1e-6)."""
    if isinstance(ours, Path):
        ours = ours.read_text()
    if isinstance(ours, str):
        ours = json.loads(ours)
    want = json.loads(expected(vectors_dir, name, style))
    assert ours["type"] == want["type"] and ours["version"] == want["version"]
    assert set().union(*(p.keys() for p in ours["points"])) <= ({"point"} if style == "2021" else {"point", "probability", "name"})
    notes = explain_differences(ours["points"], want["points"], expected_scores(vectors_dir, name, style), SPACING_MM[name])
    assert len(notes) <= 10, notes


def run(input_dir: Path, output_dir: Path, weights: Path, *extra: str) -> int:
    return process.main(["--input", str(input_dir), "--output", str(output_dir), "--weights", str(weights), *extra])


def inputs_json(relative_path: str = "images/histopathology-roi-cropout") -> list[dict[str, Any]]:
    """What Grand Challenge writes to /input/inputs.json for the 2022 image interface."""
    return [
        {
            "interface": {
                "slug": "histopathology-region-of-interest-cropout",
                "kind": "Image",
                "relative_path": relative_path,
            },
            "image": {"name": "image.tiff"},
            "value": None,
            "file": None,
        }
    ]


@pytest.fixture(scope="module")
def layout_2021(tmp_path_factory: pytest.TempPathFactory, vectors_dir: Path, vector_weights: Path) -> tuple[int, Path]:
    """Every vector image (one in a subfolder) plus the reference test folder's non-image file."""
    input_dir, output_dir = tmp_path_factory.mktemp("in2021"), tmp_path_factory.mktemp("out2021")
    for i, name in enumerate(VECTOR_NAMES):
        target = input_dir / ("nested" if i == 1 else "") / f"{name}.tiff"
        target.parent.mkdir(exist_ok=True)
        shutil.copy(vectors_dir / f"{name}.tiff", target)
    (input_dir / "expected_output.json").write_text("{}")
    return run(input_dir, output_dir, vector_weights), output_dir


@pytest.fixture(scope="module")
def layout_2022(tmp_path_factory: pytest.TempPathFactory, vectors_dir: Path, vector_weights: Path) -> tuple[int, Path]:
    input_dir, output_dir = tmp_path_factory.mktemp("in2022"), tmp_path_factory.mktemp("out2022")
    folder = input_dir / "images" / "histopathology-roi-cropout"
    folder.mkdir(parents=True)
    for name in VECTOR_NAMES:
        shutil.copy(vectors_dir / f"{name}.tiff", folder)
    (input_dir / "inputs.json").write_text(json.dumps(inputs_json()))
    return run(input_dir, output_dir, vector_weights), output_dir


def cases_by_name(output_dir: Path) -> dict[str, dict[str, Any]]:
    cases = json.loads((output_dir / process.CASES_FILE).read_text())
    return {Path(c["filename"]).stem: c for c in cases}


def test_2021_layout_reproduces_expected_vectors(layout_2021: tuple[int, Path], vectors_dir: Path) -> None:
    rc, output_dir = layout_2021
    assert rc == 0
    cases = cases_by_name(output_dir)
    assert sorted(cases) == sorted(VECTOR_NAMES)  # expected_output.json skipped, nested image found
    assert cases["synthB_1100x1700"]["filename"] == "nested/synthB_1100x1700.tiff"
    for name in VECTOR_NAMES:
        assert cases[name]["error"] is None
        assert_reproduces(cases[name]["mitotic-figures"], vectors_dir, name, "2021")
    # The platform file holds the first image in path order.
    assert json.loads((output_dir / process.RESULT_FILE).read_text()) == cases["synthB_1100x1700"]["mitotic-figures"]


def test_2022_layout_reproduces_expected_vectors(layout_2022: tuple[int, Path], vectors_dir: Path) -> None:
    rc, output_dir = layout_2022
    assert rc == 0
    cases = cases_by_name(output_dir)
    assert sorted(cases) == sorted(VECTOR_NAMES)
    for name in VECTOR_NAMES:
        assert cases[name]["filename"] == f"images/histopathology-roi-cropout/{name}.tiff"
        assert_reproduces(cases[name]["mitotic-figures"], vectors_dir, name, "2022")
    assert json.loads((output_dir / process.RESULT_FILE).read_text()) == cases[VECTOR_NAMES[0]]["mitotic-figures"]


def test_results_match_platform_schema(layout_2021: tuple[int, Path], layout_2022: tuple[int, Path]) -> None:
    if not SCHEMA.is_file():
        pytest.skip(f"{SCHEMA} is absent")
    for _, output_dir in (layout_2021, layout_2022):
        check_schema(json.loads((output_dir / process.RESULT_FILE).read_text()))
        for case in json.loads((output_dir / process.CASES_FILE).read_text()):
            check_schema(case["mitotic-figures"])


def test_bad_images_are_reported_and_good_ones_still_processed(tmp_path: Path, vectors_dir: Path, vector_weights: Path) -> None:
    """Run as the command line does: the good image (present twice: no uniqueness rejection)
    gets its result, each bad one a clear error on stderr and in results.json, exit code 1."""
    input_dir, output_dir = tmp_path / "in", tmp_path / "out"
    input_dir.mkdir()
    (input_dir / "a_empty.tiff").write_bytes(b"")
    (input_dir / "b_text.tiff").write_text("this is not an image\n")
    shutil.copy(vectors_dir / f"{SMALL}.tiff", input_dir / "c_good.tiff")
    shutil.copy(vectors_dir / f"{SMALL}.tiff", input_dir / "d_copy.tiff")
    (output_dir).mkdir()
    (output_dir / process.RESULT_FILE).write_text("stale")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "process.py"), "--input", str(input_dir), "--output", str(output_dir), "--weights", str(vector_weights)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=600,
    )
    assert proc.returncode == 1, proc.stderr
    error_lines = [line for line in proc.stderr.splitlines() if line.startswith("process: error:")]
    assert len(error_lines) == 2, proc.stderr
    assert "a_empty.tiff" in error_lines[0] and "empty file" in error_lines[0]
    assert re.fullmatch(r"process: error: \S*b_text\.tiff: \S.*", error_lines[1])  # the file, then the problem
    assert "Traceback" not in proc.stderr
    cases = json.loads((output_dir / process.CASES_FILE).read_text())
    assert [c["filename"] for c in cases] == ["a_empty.tiff", "b_text.tiff", "c_good.tiff", "d_copy.tiff"]
    assert [c["error"] is None for c in cases] == [False, False, True, True]
    assert all(c["mitotic-figures"] is None for c in cases[:2])
    assert cases[2]["mitotic-figures"] == cases[3]["mitotic-figures"]
    assert_reproduces(cases[2]["mitotic-figures"], vectors_dir, SMALL, "2021")
    assert json.loads((output_dir / process.RESULT_FILE).read_text()) == cases[2]["mitotic-figures"]
    assert not list(output_dir.glob(".*.tmp"))  # atomic writes leave no temporary file


def test_all_images_failing_writes_no_result(tmp_path: Path, vector_weights: Path) -> None:
    input_dir, output_dir = tmp_path / "in", tmp_path / "out"
    input_dir.mkdir()
    output_dir.mkdir()
    (input_dir / "bad.tif").write_bytes(b"II*\0garbage")
    (output_dir / process.RESULT_FILE).write_text("stale")
    assert run(input_dir, output_dir, vector_weights) == 1
    assert not (output_dir / process.RESULT_FILE).exists()
    [case] = json.loads((output_dir / process.CASES_FILE).read_text())
    assert case["filename"] == "bad.tif" and "bad.tif" in case["error"]


def test_style_override_by_environment(tmp_path: Path, vectors_dir: Path, vector_weights: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    input_dir, output_dir = tmp_path / "in", tmp_path / "out"
    input_dir.mkdir()
    shutil.copy(vectors_dir / f"{SMALL}.tiff", input_dir)
    monkeypatch.setenv("MIDOG_OUTPUT_STYLE", "2022")
    assert run(input_dir, output_dir, vector_weights) == 0
    assert_reproduces(output_dir / process.RESULT_FILE, vectors_dir, SMALL, "2022")
    # The option beats the environment.
    assert run(input_dir, output_dir, vector_weights, "--style", "2021") == 0
    assert_reproduces(output_dir / process.RESULT_FILE, vectors_dir, SMALL, "2021")


def test_model_dir_checkpoint_is_used(tmp_path: Path, vectors_dir: Path, vector_weights: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No --weights: the checkpoint in the platform's model folder (here via MIDOG_MODEL_DIR)."""
    model_dir = tmp_path / "model" / "extracted"
    model_dir.mkdir(parents=True)
    shutil.copy(vector_weights, model_dir / "my-upload.pth")
    input_dir, output_dir = tmp_path / "in", tmp_path / "out"
    input_dir.mkdir()
    shutil.copy(vectors_dir / f"{SMALL}.tiff", input_dir)
    monkeypatch.setenv("MIDOG_MODEL_DIR", str(tmp_path / "model"))
    assert process.main(["--input", str(input_dir), "--output", str(output_dir)]) == 0
    assert_reproduces(output_dir / process.RESULT_FILE, vectors_dir, SMALL, "2021")


def test_find_weights_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    baked = tmp_path / "baked" / "RetinaNetDA.pth"
    baked.parent.mkdir()
    baked.write_bytes(b"x")
    monkeypatch.setattr(process, "PUBLISHED_WEIGHTS", baked)
    model_dir = tmp_path / "model"
    assert process.find_weights(None, model_dir) == baked  # no model folder
    model_dir.mkdir()
    (model_dir / "README.txt").write_text("not a checkpoint")
    assert process.find_weights(None, model_dir) == baked  # a model folder without checkpoint
    (model_dir / "a.pth").write_bytes(b"x")
    assert process.find_weights(None, model_dir) == model_dir / "a.pth"
    (model_dir / "b.pt").write_bytes(b"x")
    with pytest.raises(process.MidogError, match="several checkpoints"):
        process.find_weights(None, model_dir)
    (model_dir / "RetinaNetDA.pth").write_bytes(b"x")
    assert process.find_weights(None, model_dir) == model_dir / "RetinaNetDA.pth"
    explicit = tmp_path / "explicit.pth"
    explicit.write_bytes(b"x")
    assert process.find_weights(explicit, model_dir) == explicit
    with pytest.raises(process.MidogError, match="not found"):
        process.find_weights(tmp_path / "missing.pth", model_dir)
    baked.unlink()
    with pytest.raises(process.MidogError, match="no weights"):
        process.find_weights(None, tmp_path / "nothing")


def test_find_layout(tmp_path: Path) -> None:
    assert process.find_layout(tmp_path) == ("2021", tmp_path)
    roi = tmp_path / "images" / "histopathology-roi-cropout"
    roi.mkdir(parents=True)
    assert process.find_layout(tmp_path) == ("2022", roi)
    other = tmp_path / "images" / "other-slug"
    other.mkdir()
    (tmp_path / "inputs.json").write_text(json.dumps(inputs_json("images/other-slug")))
    assert process.find_layout(tmp_path) == ("2022", other)
    (tmp_path / "inputs.json").write_text("{not json")
    assert process.find_layout(tmp_path) == ("2022", roi)


def test_no_images_and_missing_input_exit_2(tmp_path: Path, vector_weights: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "notes.txt").write_text("hello")
    assert run(tmp_path / "in", tmp_path / "out", vector_weights) == 2
    err = capsys.readouterr().err
    assert "skipping notes.txt: not an image file" in err and "no image files" in err
    assert run(tmp_path / "missing", tmp_path / "out", vector_weights) == 2
    assert "input folder not found" in capsys.readouterr().err


def test_bad_style_environment_exit_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MIDOG_OUTPUT_STYLE", "2023")
    assert process.main(["--input", str(tmp_path)]) == 2


def test_entry_point_runs_as_module(tmp_path: Path) -> None:
    """`python -m process --help` from the project root, as the container's ENTRYPOINT runs it."""
    env = {**os.environ, "PYTHONPATH": ""}
    proc = subprocess.run([sys.executable, "-m", "process", "--help"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "--input" in proc.stdout and "/opt/ml/model" in proc.stdout
