"""`midog batch` with its own local Ray (issue 21), in a real subprocess: every socket its
processes listen on is a loopback one and no dashboard runs; a second run on the same output
folder is refused while the first holds it; SIGTERM mid-slide exits 143 within 10 s with a
valid report, no temporary file and the finished slide kept; the rerun resumes."""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from midog.commands.cli import main
from test_damaged_chunks import truncated
from test_signals import ENV, images, leftovers, wait_for

ray = pytest.importorskip("ray", reason="midog batch needs Ray")
# After Ray, which brings its own psutil onto the path when no other is installed.
psutil = pytest.importorskip("psutil", reason="reads the Ray processes' own socket lists")


def listening(root: int) -> set[tuple[str, str]]:
    """(command line, address) of every listening TCP socket and bound UDP socket of `root`
    and its descendants (Ray's GCS, raylet, agents and workers are all below the driver)."""
    found = set()
    try:
        procs = [psutil.Process(root), *psutil.Process(root).children(recursive=True)]
    except psutil.NoSuchProcess:
        return found
    for proc in procs:
        try:
            for conn in proc.net_connections(kind="inet"):
                if conn.status == psutil.CONN_LISTEN or (conn.type == 2 and conn.laddr and not conn.raddr):
                    found.add((" ".join(proc.cmdline())[:200], conn.laddr.ip))
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def is_loopback(ip: str) -> bool:
    address = ipaddress.ip_address(ip)
    mapped = getattr(address, "ipv4_mapped", None)  # ::ffff:127.0.0.1 is IPv4 loopback
    return (mapped or address).is_loopback


def test_local_batch_is_closed_locked_stoppable_and_resumable(tmp_path, random_weights, capsys):
    images(tmp_path / "in")
    out = tmp_path / "out"
    truncated(tmp_path / "in")  # the damaged file (cut.tiff), refused by the batch too
    (tmp_path / "in" / "whole.tiff").unlink()
    command = [
        sys.executable, "-m", "midog", "batch", str(tmp_path / "in"), "-o", str(out), "--workers", "1",
        "--weights", str(random_weights), "--device", "cpu", "--all-tiles", "--no-progress",
    ]  # fmt: skip
    proc = subprocess.Popen(command, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    sockets: set[tuple[str, str]] = set()

    def first_slide_done() -> bool:
        sockets.update(listening(proc.pid))
        return (out / "batch-fingerprints" / "a_small.json").exists()

    try:
        wait_for(first_slide_done, proc)
        # Ray is up and a worker is on slide b: its servers have opened every socket they will.
        assert sockets, "no listening socket seen: the check saw no Ray process"
        assert all(is_loopback(ip) for _, ip in sockets), sorted(sockets)
        # Ray keeps a head process named dashboard.py even without the dashboard; it must serve nothing.
        assert not any("dashboard.py" in command for command, _ in sockets), "the dashboard listens though not asked for"

        # A second run on the same folder, now: refused before it touches anything.
        code = main(["batch", str(tmp_path / "in"), "-o", str(out), "--weights", str(random_weights), "--device", "cpu"])
        assert code == 2 and "another midog run" in capsys.readouterr().err

        time.sleep(0.5)  # inside slide b
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        seconds = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 143 and seconds < 10, (proc.returncode, seconds, err[-2000:])
    report = {Path(r["image"]).name: r for r in json.loads((out / "batch-report.json").read_text())}
    assert report["a_small.tiff"]["status"] == "ok"
    assert report["b_large.tiff"]["status"] == "failed" and "stopped by SIGTERM" in report["b_large.tiff"]["error"]
    assert json.loads((out / "a_small.json").read_text())["type"] == "Multiple points"
    assert not (out / "b_large.json").exists() and leftovers(tmp_path) == []

    rerun = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 1, rerun.stderr[-2000:]
    report = {Path(r["image"]).name: r for r in json.loads((out / "batch-report.json").read_text())}
    assert {name: r["status"] for name, r in report.items()} == {"a_small.tiff": "skipped", "b_large.tiff": "ok", "c_small.tiff": "ok", "cut.tiff": "failed"}
    assert "strip offsets tag (273) is missing or cannot be read" in report["cut.tiff"]["error"]


def test_planted_fingerprint_folder_link_is_refused(tmp_path, random_weights, capsys):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    os.symlink(elsewhere, out / "batch-fingerprints")
    images(tmp_path / "in")
    code = main(["batch", str(tmp_path / "in"), "-o", str(out), "--weights", str(random_weights), "--device", "cpu"])
    assert code == 1 and "batch-fingerprints: is a symbolic link" in capsys.readouterr().err
    assert list(elsewhere.iterdir()) == []


def test_loopback_switch_is_restored(monkeypatch):
    """After a local run the process can still join a real cluster with its real address."""
    from ray._private import ray_constants

    from midog.pipeline.cluster import LOCAL_ONLY_ENV, loopback_only

    monkeypatch.delenv(LOCAL_ONLY_ENV, raising=False)
    before = ray_constants.ENABLE_RAY_CLUSTER
    with loopback_only(ray):
        assert os.environ[LOCAL_ONLY_ENV] == "0" and ray_constants.ENABLE_RAY_CLUSTER is False
    assert LOCAL_ONLY_ENV not in os.environ and ray_constants.ENABLE_RAY_CLUSTER == before

