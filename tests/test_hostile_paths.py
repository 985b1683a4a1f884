"""Hostile paths (issue 21), one test per class: inputs.json relative_paths that climb out of
/input, are absolute or pass a symbolic link out of it; image files that are links to
elsewhere; symbolic links planted in the output folder; image names with newlines and
control characters. None is read or written outside the folders given."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

from conftest import ROOT
from midog.atomic import LOCK_NAME, output_lock, write_json_atomic
from midog.commands.cli import main
from midog.errors import UsageError
from midog.pipeline.container import ROI_FOLDER, ROI_SLUG, find_layout

sys.path.insert(0, str(ROOT))
import process  # noqa: E402

CM = {"resolution": (40000, 40000), "resolutionunit": "CENTIMETER"}


def image(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, np.full((64, 64, 3), 180, np.uint8), photometric="rgb", **CM)
    return path


def socket_entry(relative_path: str) -> dict:
    return {"interface": {"kind": "Image", "slug": ROI_SLUG, "relative_path": relative_path}}


@pytest.fixture()
def outside(tmp_path: Path) -> Path:
    """A folder beside /input holding an image that must never be read."""
    return image(tmp_path / "elsewhere" / "secret.tiff").parent


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink"])
def test_inputs_json_relative_path_outside_input_is_ignored(tmp_path, outside, kind, caplog):
    inp = tmp_path / "input"
    image(inp / ROI_FOLDER / "own.tiff")
    relative = {"dotdot": "../elsewhere", "absolute": str(outside), "symlink": "link"}[kind]
    if kind == "symlink":
        os.symlink(outside, inp / "link")
    (inp / "inputs.json").write_text(json.dumps([socket_entry(relative)]))
    layout, folder = find_layout(inp)
    assert (layout, folder) == ("2022", inp / ROI_FOLDER)
    assert "leads outside" in caplog.text


def test_image_link_leading_outside_input_is_that_images_error(tmp_path, outside, random_weights):
    inp, out = tmp_path / "input", tmp_path / "output"
    image(inp / "own.tiff")
    os.symlink(outside / "secret.tiff", inp / "link.tiff")
    os.symlink(outside, inp / "folder")  # a linked folder: its images are outside too
    code = process.main(["--input", str(inp), "--output", str(out), "--weights", str(random_weights), "--device", "cpu"])
    cases = {c["filename"]: c for c in json.loads((out / "results.json").read_text())}
    assert code == 1
    assert cases.pop("own.tiff")["error"] is None
    assert "link.tiff" in cases and set(cases) <= {"link.tiff", "folder/secret.tiff"}  # the folder itself is no case
    for case in cases.values():
        assert "a symbolic link that leads outside" in case["error"] and case["mitotic-figures"] is None


def test_outputs_are_never_written_through_planted_links(tmp_path, random_weights, capsys):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    inp, out = tmp_path / "input", tmp_path / "output"
    image(inp / "a.tiff")
    out.mkdir()
    for name in (process.CASES_FILE, process.RESULT_FILE):
        os.symlink(victim, out / name)
    assert process.main(["--input", str(inp), "--output", str(out), "--weights", str(random_weights), "--device", "cpu"]) == 0
    assert victim.read_text() == "precious"
    assert not (out / process.CASES_FILE).is_symlink() and json.loads((out / process.CASES_FILE).read_text())[0]["error"] is None
    # midog detect: a link where a result goes is replaced, its target untouched
    detect_out = tmp_path / "detect"
    detect_out.mkdir()
    os.symlink(victim, detect_out / "a.json")
    assert main(["detect", str(inp / "a.tiff"), "-o", str(detect_out), "--weights", str(random_weights), "--device", "cpu", "--no-progress"]) == 0
    assert victim.read_text() == "precious" and not (detect_out / "a.json").is_symlink()


def test_planted_lock_link_and_link_into_elsewhere_are_refused(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    out = tmp_path / "out"
    out.mkdir()
    os.symlink(victim, out / LOCK_NAME)
    with pytest.raises(UsageError, match="cannot lock the output folder"):
        with output_lock(out):
            pass
    assert victim.read_text() == "precious"
    # the report writer itself: a planted link is replaced, not followed
    os.symlink(victim, out / "batch-report.json")
    write_json_atomic(out / "batch-report.json", [])
    assert victim.read_text() == "precious" and json.loads((out / "batch-report.json").read_text()) == []


def test_control_characters_in_names_stay_on_one_line(tmp_path, random_weights, capsys):
    inp, out = tmp_path / "input", tmp_path / "output"
    inp.mkdir()
    forged = "x.tiff\nprocess: all images ok \x1b[2J"
    (inp / f"{forged}.tiff").write_text("not an image")
    image(inp / "good.tiff")
    code = process.main(["--input", str(inp), "--output", str(out), "--weights", str(random_weights), "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 1
    assert "\nprocess: all images ok" not in err and "\x1b" not in err
    assert any("x.tiff\\nprocess: all images ok \\x1b[2J" in line and "error" in line for line in err.splitlines()), err
    cases = json.loads((out / "results.json").read_text())  # valid JSON, the real name kept
    assert {c["filename"] for c in cases} == {f"{forged}.tiff", "good.tiff"}
    # midog detect: the error line is one line too
    code = main(["detect", str(inp / f"{forged}.tiff"), "-o", str(tmp_path / "d.json"), "--weights", str(random_weights), "--device", "cpu"])
    lines = [ln for ln in capsys.readouterr().err.splitlines() if "error" in ln]
    assert code == 1 and len(lines) == 1 and "x.tiff\\nprocess" in lines[0]
