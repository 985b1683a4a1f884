"""process.py, the Grand Challenge entry point, without Docker: the 2021, 2022 and 2025 input
layouts on the reference vectors (exact expected JSON, platform schema), a bad image beside
good ones, the weights choice (/opt/ml/model override, baked-in model/, model manifest), the
style override and the start-up log."""

from __future__ import annotations

import contextlib
import io
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


def inputs_json(relative_path: str = "images/histopathology-roi-cropout", slug: str = "histopathology-region-of-interest-cropout") -> list[dict[str, Any]]:
    """/input/inputs.json in the shape Grand Challenge writes it for the MIDOG 2025 phase: one
    socket value per input, with its interface (kind, slug, relative_path) and the image's pk
    and name."""
    return [
        {
            "pk": 2748151,
            "file": None,
            "image": {"pk": "6a3b1d2e-52c4-4c4e-9d0e-1f6b3a8c9e71", "name": "image.tiff"},
            "value": None,
            "interface": {
                "pk": 173,
                "kind": "Image",
                "slug": slug,
                "title": "Histopathology Region of Interest Cropout",
                "super_kind": "Image",
                "description": "",
                "default_value": None,
                "look_up_table": None,
                "relative_path": relative_path,
                "overlay_segments": [],
            },
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
    """The 2022 layout: the image folder, no sockets file."""
    input_dir, output_dir = tmp_path_factory.mktemp("in2022"), tmp_path_factory.mktemp("out2022")
    folder = input_dir / "images" / "histopathology-roi-cropout"
    folder.mkdir(parents=True)
    for name in VECTOR_NAMES:
        shutil.copy(vectors_dir / f"{name}.tiff", folder)
    return run(input_dir, output_dir, vector_weights), output_dir


@pytest.fixture(scope="module")
def layout_2025(tmp_path_factory: pytest.TempPathFactory, vectors_dir: Path, vector_weights: Path) -> tuple[int, Path, str, Path]:
    """The 2025 layout (the platform's inputs.json naming the image socket), with the weights
    only in a subfolder of --model-dir, as an extracted model tarball: (exit, output, log, checkpoint)."""
    input_dir, output_dir = tmp_path_factory.mktemp("in2025"), tmp_path_factory.mktemp("out2025")
    folder = input_dir / "images" / "histopathology-roi-cropout"
    folder.mkdir(parents=True)
    for name in VECTOR_NAMES:
        shutil.copy(vectors_dir / f"{name}.tiff", folder)
    (input_dir / "inputs.json").write_text(json.dumps(inputs_json()))
    model_dir = tmp_path_factory.mktemp("opt-ml-model")
    checkpoint = model_dir / "v1" / "vectors.pth"
    checkpoint.parent.mkdir()
    shutil.copy(vector_weights, checkpoint)
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        rc = process.main(["--input", str(input_dir), "--output", str(output_dir), "--model-dir", str(model_dir), "--device", "cpu"])
    return rc, output_dir, err.getvalue(), checkpoint


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


def test_2025_layout_reproduces_2022_candidates_in_the_2025_shape(layout_2025: tuple[int, Path, str, Path], vectors_dir: Path) -> None:
    rc, output_dir, log, checkpoint = layout_2025
    assert rc == 0, log
    cases = cases_by_name(output_dir)
    assert sorted(cases) == sorted(VECTOR_NAMES)
    for name in VECTOR_NAMES:
        result = cases[name]["mitotic-figures"]
        assert list(result)[:2] == ["name", "type"] and result["name"] == "Points of interest"
        assert result["type"] == "Multiple points"
        for point in result["points"]:
            assert set(point) == {"name", "point", "probability"}
            assert point["name"] in ("mitotic figure", "non-mitotic figure") and 0 <= point["probability"] <= 1
            assert len(point["point"]) == 3 and point["point"][2] == 0
        check_schema(result)
        # Without the top-level name, exactly the 2022 candidates of the reference.
        assert_reproduces({k: v for k, v in result.items() if k != "name"}, vectors_dir, name, "2022")
    platform_file = json.loads((output_dir / process.RESULT_FILE).read_text())
    assert platform_file == cases[VECTOR_NAMES[0]]["mitotic-figures"]
    assert "2025 interface" in log and "output style 2025" in log
    assert re.search(rf"weights {re.escape(str(checkpoint))} \(the platform's model folder ", log), log
    assert re.search(r"torch \d+\.\d+\S* \(.*\); running on CPU", log), log


def test_results_match_platform_schema(layout_2021: tuple[int, Path], layout_2022: tuple[int, Path], layout_2025: tuple[int, Path, str, Path]) -> None:
    if not SCHEMA.is_file():
        pytest.skip(f"{SCHEMA} is absent")
    for output_dir in (layout_2021[1], layout_2022[1], layout_2025[1]):
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
    """--weights, then the platform's model folder, then the baked-in model/, then `midog fetch`'s."""
    fetched = tmp_path / "home" / "RetinaNetDA.pth"
    fetched.parent.mkdir()
    fetched.write_bytes(b"x")
    from midog.pipeline import container

    monkeypatch.setattr(container, "published_weights", lambda: fetched)
    model_dir, baked = tmp_path / "model", tmp_path / "baked"
    assert container.find_weights(None, model_dir, baked)[0] == fetched  # no model folders at all
    baked.mkdir()
    (baked / "README.md").write_text("not a checkpoint")
    assert container.find_weights(None, model_dir, baked)[0] == fetched  # a model folder without checkpoint
    (baked / "RetinaNetDA.pth").write_bytes(b"x")
    assert container.find_weights(None, model_dir, baked) == (baked / "RetinaNetDA.pth", f"baked in ({baked}); {model_dir} has no checkpoint")
    model_dir.mkdir()
    (model_dir / "a.pth").write_bytes(b"x")
    path, source = container.find_weights(None, model_dir, baked)
    assert path == model_dir / "a.pth" and "platform's model folder" in source
    (model_dir / "b.pt").write_bytes(b"x")
    with pytest.raises(container.MidogError, match="several checkpoints"):
        container.find_weights(None, model_dir, baked)
    (model_dir / "RetinaNetDA.pth").write_bytes(b"x")
    assert container.find_weights(None, model_dir, baked)[0] == model_dir / "RetinaNetDA.pth"
    explicit = tmp_path / "explicit.pth"
    explicit.write_bytes(b"x")
    assert container.find_weights(explicit, model_dir, baked) == (explicit, "--weights")
    with pytest.raises(container.MidogError, match="not found"):
        container.find_weights(tmp_path / "missing.pth", model_dir, baked)
    fetched.unlink()
    with pytest.raises(container.MidogError, match="no weights"):
        container.find_weights(None, tmp_path / "nothing", tmp_path / "nothing-baked")


def test_model_manifest_gives_the_operating_point_when_its_hash_matches(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from midog.detector.weights import git_blob_sha1
    from midog.pipeline.run import manifest_threshold

    weights = tmp_path / "RetinaNetDA.pth"
    weights.write_bytes(b"weights")
    manifest = tmp_path / "manifest.json"
    assert manifest_threshold(weights) is None  # no manifest
    entry = {"name": "weights", "dest": "RetinaNetDA.pth", "url": "https://example.org/w", "blob": git_blob_sha1(weights)}
    manifest.write_text(json.dumps({"operating_point": 0.7, "artefacts": [entry]}))
    assert manifest_threshold(weights) == 0.7
    manifest.write_text(json.dumps({"operating_point": 0.7, "artefacts": [{**entry, "blob": "0" * 40}]}))
    assert manifest_threshold(weights) is None
    assert "ignoring" in capsys.readouterr().err
    manifest.write_text(json.dumps({"operating_point": 0.7, "artefacts": [{**entry, "dest": "RetinaNetDA.pth"}]}))
    other = tmp_path / "trained.pt"
    other.write_bytes(b"other weights")
    assert manifest_threshold(other) is None  # not listed: its own operating point applies
    manifest.write_text(json.dumps({"operating_point": "high", "artefacts": [entry]}))
    assert manifest_threshold(weights) is None
    # The project's own model/manifest.json describes the published weights at 0.64.
    ours = json.loads((ROOT / "model" / "manifest.json").read_text())
    assert ours["operating_point"] == 0.64 and ours["artefacts"][0]["dest"] == "RetinaNetDA.pth"


def test_model_manifest_operating_point_is_applied(tmp_path: Path, vectors_dir: Path, vector_weights: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A model folder as the tarball delivers it (checkpoint + manifest.json): the manifest's
    operating point decides which candidates are mitotic figures."""
    from midog.detector.weights import git_blob_sha1

    model_dir = tmp_path / "model"
    model_dir.mkdir()
    shutil.copy(vector_weights, model_dir / "RetinaNetDA.pth")
    entry = {"name": "weights", "dest": "RetinaNetDA.pth", "url": "https://example.org/w", "blob": git_blob_sha1(vector_weights)}
    (model_dir / "manifest.json").write_text(json.dumps({"operating_point": 0.99, "artefacts": [entry]}))
    input_dir, output_dir = tmp_path / "in", tmp_path / "out"
    input_dir.mkdir()
    shutil.copy(vectors_dir / f"{SMALL}.tiff", input_dir)
    assert process.main(["--input", str(input_dir), "--output", str(output_dir), "--model-dir", str(model_dir)]) == 0
    assert "threshold 0.99," in capsys.readouterr().err
    got = [p["point"] for p in json.loads((output_dir / process.RESULT_FILE).read_text())["points"]]
    candidates = json.loads(expected(vectors_dir, SMALL, "2022"))["points"]
    assert got == [p["point"] for p in candidates if p["probability"] > 0.99] and got


def test_device_cuda_without_cuda_exits_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """MIDOG_DEVICE=cuda (or --device cuda) never falls back to the CPU."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("MIDOG_DEVICE", "cuda")
    assert process.main(["--input", str(tmp_path), "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "process: error: --device cuda was asked for" in err
    assert not (tmp_path / "out").exists()


def test_find_layout(tmp_path: Path) -> None:
    assert process.find_layout(tmp_path) == ("2021", tmp_path)
    roi = tmp_path / "images" / "histopathology-roi-cropout"
    roi.mkdir(parents=True)
    assert process.find_layout(tmp_path) == ("2022", roi)
    other = tmp_path / "images" / "other-slug"
    other.mkdir()
    (tmp_path / "inputs.json").write_text(json.dumps(inputs_json("images/other-slug", "other-slug")))
    assert process.find_layout(tmp_path) == ("2025", other)
    # The ROI socket wins over other image sockets.
    (tmp_path / "inputs.json").write_text(json.dumps(inputs_json("images/other-slug", "other-slug") + inputs_json()))
    assert process.find_layout(tmp_path) == ("2025", roi)
    (tmp_path / "inputs.json").write_text("{not json")
    assert process.find_layout(tmp_path) == ("2022", roi)
    (tmp_path / "inputs.json").write_text("[]")
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


def test_detect_and_process_use_the_same_operating_point(tmp_path: Path, vectors_dir: Path, vector_weights: Path) -> None:
    """The same weights with a manifest beside them: `midog detect` and process.py settle the
    same run (midog.pipeline.run), so the manifest's operating point applies through both doors."""
    from midog.commands.cli import main as midog_main
    from midog.detector.weights import git_blob_sha1
    from midog.pipeline.run import settle_run

    model_dir = tmp_path / "model"
    model_dir.mkdir()
    weights = model_dir / "RetinaNetDA.pth"
    shutil.copy(vector_weights, weights)
    entry = {"name": "weights", "dest": "RetinaNetDA.pth", "url": "https://example.org/w", "blob": git_blob_sha1(weights)}
    (model_dir / "manifest.json").write_text(json.dumps({"operating_point": 0.97, "artefacts": [entry]}))
    run = settle_run(weights)
    assert (run.threshold, run.threshold_from) == (0.97, str(model_dir / "manifest.json"))
    assert settle_run(weights, threshold=0.5).threshold == 0.5  # given beats the manifest
    input_dir, output_dir = tmp_path / "in", tmp_path / "out"
    input_dir.mkdir()
    shutil.copy(vectors_dir / f"{SMALL}.tiff", input_dir)
    assert process.main(["--input", str(input_dir), "--output", str(output_dir), "--model-dir", str(model_dir), "--device", "cpu"]) == 0
    detected = tmp_path / "detect.json"
    assert midog_main(["detect", str(input_dir / f"{SMALL}.tiff"), "--weights", str(weights), "-o", str(detected), "--device", "cpu", "-q"]) == 0
    ours = json.loads(detected.read_text())
    assert ours == json.loads((output_dir / process.RESULT_FILE).read_text())
    assert json.loads(detected.with_suffix(".midog.json").read_text())["threshold"] == 0.97
    candidates = json.loads(expected(vectors_dir, SMALL, "2022"))["points"]
    assert [p["point"] for p in ours["points"]] == [p["point"] for p in candidates if p["probability"] > 0.97] != []
