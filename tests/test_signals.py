"""SIGTERM and SIGINT in the middle of an image (issue 21), with real subprocesses and real
signals: the run stops within seconds with 128 + the signal (143, 130), leaves no temporary
or partial file, keeps every result written before, and a rerun finishes the rest.
`midog batch`'s run is in test_ray_local.py (it needs Ray)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile

from conftest import ROOT

CM = {"resolution": (40000, 40000), "resolutionunit": "CENTIMETER"}  # 0.25 um/px
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}


def images(folder: Path) -> list[Path]:
    """A one-tile image, then one of 9 tiles that takes seconds on a CPU, then another small one."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(5)
    sizes = {"a_small": 512, "b_large": 1536, "c_small": 512}
    paths = []
    for name, size in sizes.items():
        path = folder / f"{name}.tiff"
        tifffile.imwrite(path, rng.integers(0, 255, (size, size, 3), dtype=np.uint8), photometric="rgb", **CM)
        paths.append(path)
    return paths


def wait_for(condition, proc: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, f"the run ended before the signal: {proc.communicate()[1][-2000:]}"
        assert time.monotonic() < deadline, "timed out waiting for the first result"
        time.sleep(0.05)


def stop(proc: subprocess.Popen, signum: int) -> tuple[int, float, str]:
    """Send `signum`; (exit status, seconds until exit, stderr)."""
    time.sleep(0.5)  # inside the large image
    sent = time.monotonic()
    proc.send_signal(signum)
    try:
        _, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError("still running 30 s after the signal")
    return proc.returncode, time.monotonic() - sent, err


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*.tmp*"))


@pytest.mark.parametrize("signum, status", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_detect_stopped_mid_image_keeps_earlier_results_and_a_rerun_finishes(tmp_path, random_weights, signum, status):
    inputs, out = images(tmp_path / "in"), tmp_path / "out"
    command = [sys.executable, "-m", "midog", "detect", *map(str, inputs), "-o", str(out), "--weights", str(random_weights), "--device", "cpu", "--all-tiles", "--no-progress"]
    proc = subprocess.Popen(command, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: (out / "a_small.json").exists(), proc)
    code, seconds, err = stop(proc, signum)
    assert code == status and seconds < 10, (code, seconds, err)
    assert f"stopped by {signal.Signals(signum).name}" in err or signum == signal.SIGINT, err
    assert "Traceback" not in err
    assert json.loads((out / "a_small.json").read_text())["type"] == "Multiple points"
    assert [p.name for p in out.glob("[bc]_*")] == []  # neither result nor sidecar of the unfinished images
    assert leftovers(tmp_path) == []
    if signum != signal.SIGTERM:
        return  # the rerun is the same for both signals
    rerun = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    assert sorted(p.name for p in out.glob("*.json") if not p.name.endswith(".midog.json")) == ["a_small.json", "b_large.json", "c_small.json"]


def test_process_killed_at_its_time_limit_leaves_valid_results(tmp_path, random_weights):
    """The platform stops a container that runs past its limit with SIGTERM (then SIGKILL):
    process.py saves after every image, so what it wrote is complete JSON either way."""
    inp, out = tmp_path / "input", tmp_path / "output"
    images(inp)
    command = [sys.executable, str(ROOT / "process.py"), "--input", str(inp), "--output", str(out), "--weights", str(random_weights), "--device", "cpu"]
    proc = subprocess.Popen(command, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def first_case_saved() -> bool:
        try:
            return len(json.loads((out / "results.json").read_text())) == 1
        except (OSError, ValueError):
            return False

    wait_for(first_case_saved, proc)
    code, seconds, err = stop(proc, signal.SIGTERM)
    assert code == 143 and seconds < 10, (code, seconds, err)
    assert "stopped by SIGTERM" in err
    cases = json.loads((out / "results.json").read_text())
    assert [c["filename"] for c in cases] == ["a_small.tiff"] and cases[0]["error"] is None
    assert json.loads((out / "mitotic-figures.json").read_text()) == cases[0]["mitotic-figures"]
    assert leftovers(tmp_path) == []
    rerun = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    assert [c["filename"] for c in json.loads((out / "results.json").read_text())] == ["a_small.tiff", "b_large.tiff", "c_small.tiff"]


def test_process_saves_after_every_image(tmp_path, random_weights, monkeypatch):
    """In process: results.json after each case holds the cases so far (what a SIGKILL keeps)."""
    sys.path.insert(0, str(ROOT))
    import process

    inp, out = tmp_path / "input", tmp_path / "output"
    inp.mkdir()
    for name in ("a", "b"):
        tifffile.imwrite(inp / f"{name}.tiff", np.full((64, 64, 3), 200, np.uint8), photometric="rgb", **CM)
    seen: list[int] = []
    original = process.MitoticFigureDetection.process_case

    def spy(self, *, idx, case):
        seen.append(len(json.loads((out / "results.json").read_text())))
        return original(self, idx=idx, case=case)

    monkeypatch.setattr(process.MitoticFigureDetection, "process_case", spy)
    assert process.main(["--input", str(inp), "--output", str(out), "--weights", str(random_weights), "--device", "cpu"]) == 0
    assert seen == [0, 1]
