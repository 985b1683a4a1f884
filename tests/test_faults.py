"""Full disks, failed writes and two runs on one output folder (issue 21): no half-written
result, earlier results kept, one line naming the file and the cause, a non-zero exit; a
second run on a folder in use is refused, and concurrent writers of one file never leave a
broken or temporary file."""

from __future__ import annotations

import errno
import json
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import tifffile

import midog.atomic
from conftest import ROOT
from midog.atomic import atomic_path, output_lock, remove_stale_temp, write_json_atomic
from midog.commands.cli import main
from midog.errors import UsageError, WriteError

sys.path.insert(0, str(ROOT))
import process  # noqa: E402

CM = {"resolution": (40000, 40000), "resolutionunit": "CENTIMETER"}


def image(path: Path, size: int = 64) -> Path:
    tifffile.imwrite(path, np.random.default_rng(1).integers(0, 255, (size, size, 3), dtype=np.uint8), photometric="rgb", **CM)
    return path


def detect(args: list[str], capsys) -> tuple[int, str]:
    code = main(["detect", *args, "--no-progress", "--device", "cpu"])
    return code, capsys.readouterr().err


def no_temp(folder: Path) -> bool:
    return not any(".tmp" in p.name for p in folder.rglob("*"))


@pytest.fixture()
def small_disk(tmp_path: Path):
    """A 1 MiB tmpfs of our own: a real full disk. Needs root and a kernel that lets us mount."""
    mount = tmp_path / "disk"
    mount.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({result.stderr.strip() or 'mount failed'}); test_write_hook_enospc covers the logic")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(folder: Path) -> None:
    """Take every free byte of the file system holding `folder`."""
    try:
        with open(folder / "filler", "wb") as f:
            while True:
                f.write(b"\0" * 4096)
                f.flush()
    except OSError as exc:
        assert exc.errno == errno.ENOSPC


def test_full_disk_detect_keeps_earlier_results_and_names_the_file(tmp_path, small_disk, random_weights, capsys):
    a, b, c = (image(tmp_path / f"{n}.tiff") for n in "abc")
    out = small_disk / "out"
    assert detect([str(a), "--weights", str(random_weights), "-o", str(out) + "/"], capsys)[0] == 0
    before = (out / "a.json").read_bytes()
    fill(small_disk)
    code, err = detect([str(b), str(c), "--weights", str(random_weights), "-o", str(out)], capsys)
    assert code == 1
    lines = [ln for ln in err.splitlines() if "error" in ln]
    # b's first file (its sidecar, then the JSON) is the one that met the full disk
    assert len(lines) == 1 and re.search(rf"{re.escape(str(out))}/b(\.midog)?\.json: cannot write it: No space left on device \(ENOSPC\)", lines[0]), err
    assert (out / "a.json").read_bytes() == before  # the earlier result is intact
    assert sorted(p.name for p in out.glob("[bc]*")) == []  # stopped: c would fail the same way
    assert no_temp(small_disk)


def test_full_disk_process_exits_non_zero_with_valid_earlier_files(tmp_path, small_disk, random_weights, capsys):
    inp = tmp_path / "input"
    inp.mkdir()
    image(inp / "a.tiff")
    out = small_disk / "output"
    assert process.main(["--input", str(inp), "--output", str(out), "--weights", str(random_weights), "--device", "cpu"]) == 0
    before = (out / "results.json").read_bytes()
    image(inp / "b.tiff")
    fill(small_disk)
    code = process.main(["--input", str(inp), "--output", str(out), "--weights", str(random_weights), "--device", "cpu"])
    err = capsys.readouterr().err
    assert code != 0
    assert f"{out / 'results.json'}: cannot write it: No space left on device" in err, err
    assert (out / "results.json").read_bytes() == before
    assert no_temp(small_disk)


def test_write_hook_enospc(tmp_path, monkeypatch):
    """The same rule without a mount: a write that fails midway leaves the old file and no temporary."""
    target = write_json_atomic(tmp_path / "r.json", {"old": True})

    def full(path: Path) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(midog.atomic, "_fsync", full)
    with pytest.raises(WriteError, match=r"r\.json: cannot write it: No space left on device \(ENOSPC\)") as caught:
        write_json_atomic(target, {"new": True})
    assert caught.value.disk_full
    assert json.loads(target.read_text()) == {"old": True} and no_temp(tmp_path)


def test_second_run_on_a_locked_output_folder_is_refused(tmp_path, random_weights, capsys):
    out = tmp_path / "out"
    with output_lock(out):
        with pytest.raises(UsageError, match=rf"another midog run \(pid {os.getpid()}\) is writing to this output folder"):
            with output_lock(out):
                pass
        inp = tmp_path / "input"
        inp.mkdir()
        image(inp / "a.tiff")
        code = process.main(["--input", str(inp), "--output", str(out), "--weights", str(random_weights), "--device", "cpu"])
        assert code == 2 and "another midog run" in capsys.readouterr().err
        assert not (out / "results.json").exists()
    with output_lock(out):  # released with its holder
        pass


def test_lock_in_another_process_is_seen(tmp_path):
    """flock is per open file: a lock held by another process refuses this one too."""
    out = tmp_path / "out"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from midog.atomic import output_lock\nwith output_lock(sys.argv[1]):\n print('locked', flush=True); time.sleep(60)", str(out)],
        env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(UsageError, match=rf"pid {holder.pid}"):
            with output_lock(out):
                pass
    finally:
        holder.kill()
        holder.wait()
    with output_lock(out):  # a killed holder's lock is gone with it
        pass


def test_concurrent_writers_of_one_file_leave_one_complete_file(tmp_path):
    """Two Ray workers (or two `midog detect` runs) writing the same stem: every write is a
    rename of a complete file, so the result is one writer's whole JSON, never a mix."""
    target = tmp_path / "same.json"
    payloads = [{"writer": w, "points": list(range(20000))} for w in range(4)]
    threads = [threading.Thread(target=lambda p=p: [write_json_atomic(target, p) for _ in range(10)]) for p in payloads]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert json.loads(target.read_text()) in payloads and no_temp(tmp_path)


def test_stale_temp_removal_spares_a_live_writer(tmp_path):
    target = tmp_path / "x.json"
    (tmp_path / ".x.json.dead.tmp").write_text("left by a killed run")
    with atomic_path(target) as tmp:
        tmp.write_text("{}")
        remove_stale_temp([target])  # another run starting now
        assert tmp.exists() and not (tmp_path / ".x.json.dead.tmp").exists()
    assert target.read_text() == "{}"
