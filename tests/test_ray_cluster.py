"""`midog batch` on a real two-node Ray cluster that loses a node mid-run (issue 30).

A head and a second node are started as separate `ray start` processes on 127.0.0.1, one
CPU each, so the two workers land one on each node. When two slides are done and the
second node's worker is at work, every process of that node (its raylet, agents and log
monitor, one process group, and the worker below its raylet) gets SIGKILL. The run must still finish every image exactly once: all in the report as ok,
each output written once (a watcher records every inode an output ever has: an atomic
rewrite would show a second one), no temporary file left, and a rerun has nothing to do.
Skipped with the reason where Ray cannot start the two nodes.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile

ray = pytest.importorskip("ray", reason="midog batch needs Ray")
psutil = pytest.importorskip("psutil", reason="finds the second node's processes")

ROOT = Path(__file__).resolve().parent.parent
WEIGHTS = ROOT / "weights" / "demo-synthetic.pth"
RAY = Path(sys.executable).parent / "ray"
ENV = {
    **os.environ,
    "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    "RAY_USAGE_STATS_ENABLED": "0",
    # Notice the lost node within seconds rather than Ray's default half-minute.
    "RAY_health_check_period_ms": "500",
    "RAY_health_check_failure_threshold": "3",
    "RAY_health_check_timeout_ms": "500",
    "OMP_NUM_THREADS": "1",
    # Token authentication, as a real cluster should run (docs/batch-failures.md): every node
    # and the driver hold the same token; its own, so no ~/.ray/auth_token decides.
    "RAY_AUTH_MODE": "token",
    "RAY_AUTH_TOKEN": secrets.token_hex(32),
}
N_IMAGES = 6


def free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def node_args() -> list[str]:
    """Ports of one node's own servers: free ones, so nothing clashes with another Ray here."""
    agent, metrics, runtime_env = free_ports(3)
    return ["--node-ip-address=127.0.0.1", "--num-cpus=1", "--disable-usage-stats", f"--dashboard-agent-listen-port={agent}",
            f"--metrics-export-port={metrics}", f"--runtime-env-agent-port={runtime_env}"]


def group(pgid: int) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["pid"]):
        try:
            if os.getpgid(proc.pid) == pgid:
                found.append(proc)
        except (ProcessLookupError, psutil.Error):
            continue
    return found


def node_processes(pgid: int) -> list[psutil.Process]:
    """A node started by `ray start` in its own process group: that group (raylet, agents,
    log monitor) and every descendant (Ray's workers call setsid, so they leave the group)."""
    found = {p.pid: p for p in group(pgid)}
    for proc in list(found.values()):
        try:
            found.update({c.pid: c for c in proc.children(recursive=True)})
        except psutil.Error:
            continue
    return list(found.values())


def command_line(proc: psutil.Process) -> str:
    try:
        return " ".join(proc.cmdline())
    except psutil.Error:  # ended meanwhile
        return ""


def kill_node(pgid: int) -> None:
    for proc in node_processes(pgid):
        try:
            proc.send_signal(signal.SIGKILL)
        except psutil.Error:
            pass


class InodeWatch(threading.Thread):
    """Every inode each output file has had while the run went on."""

    def __init__(self, folder: Path) -> None:
        super().__init__(daemon=True)
        self.folder, self.seen, self.running = folder, {}, True

    def run(self) -> None:
        while self.running:
            for path in list(self.folder.glob("*.json")) + list(self.folder.glob("batch-fingerprints/*.json")):
                try:
                    self.seen.setdefault(str(path.relative_to(self.folder)), set()).add(path.stat().st_ino)
                except (FileNotFoundError, ValueError):
                    continue
            time.sleep(0.01)


@pytest.fixture
def cluster():
    """(address, pgid of the second node). Each node runs in a process group of its own."""
    if shutil.which(str(RAY)) is None:
        pytest.skip(f"no `ray` command at {RAY}")
    temp = tempfile.mkdtemp(prefix="r30-", dir="/tmp")  # Ray's socket paths must stay short
    port, dashboard, client = free_ports(3)
    started: list[int] = []

    def start(args: list[str]) -> subprocess.CompletedProcess:
        proc = subprocess.Popen([str(RAY), "start", *args], env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
        started.append(proc.pid)
        out, _ = proc.communicate(timeout=120)
        return subprocess.CompletedProcess(proc.args, proc.returncode, out)

    try:
        head = start(["--head", f"--port={port}", f"--temp-dir={temp}", "--include-dashboard=false", f"--dashboard-port={dashboard}",
                      f"--ray-client-server-port={client}", '--resources={"midog_head": 1}', *node_args()])
        if head.returncode != 0:
            pytest.skip(f"Ray cannot start a head node here: {head.stdout[-500:]}")
        second = start([f"--address=127.0.0.1:{port}", '--resources={"midog_second": 1}', *node_args()])
        if second.returncode != 0:
            pytest.skip(f"Ray cannot start a second node here: {second.stdout[-500:]}")
        yield f"127.0.0.1:{port}", started[1]
    finally:
        for pgid in started:  # only the processes of the two nodes this test started
            kill_node(pgid)
        shutil.rmtree(temp, ignore_errors=True)


def test_batch_survives_losing_a_node(tmp_path: Path, cluster: tuple[str, int]) -> None:
    address, second = cluster
    folder = tmp_path / "in"
    folder.mkdir()
    rng = np.random.default_rng(30)
    for k in range(N_IMAGES):
        pixels = rng.integers(0, 255, (700, 700, 3), dtype=np.uint8)  # 4 tiles
        tifffile.imwrite(folder / f"img{k}.tiff", pixels, photometric="rgb", resolution=(40000, 40000), resolutionunit="CENTIMETER")
    out = tmp_path / "out"
    command = [sys.executable, "-m", "midog", "batch", str(folder), "-o", str(out), "--address", address, "--workers", "2",
               "--cpus-per-worker", "1", "--weights", str(WEIGHTS), "--device", "cpu", "--all-tiles", "--no-progress"]
    watch = InodeWatch(out)
    out.mkdir()
    watch.start()
    proc = subprocess.Popen(command, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # Wait until the second node's worker is up and some slides are done, then kill that node.
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, f"the run ended before the node was lost: {proc.communicate()[1][-2000:]}"
            assert time.monotonic() < deadline, "no worker started on the second node"
            on_second = [p for p in node_processes(second) if "DetectorWorker" in command_line(p)]
            if on_second and len(list(out.glob("batch-fingerprints/*.json"))) >= 2:
                break
            time.sleep(0.1)
        committed = len(list(out.glob("batch-fingerprints/*.json")))
        assert committed < N_IMAGES, "every image was done before the node could be lost"
        victims = " ".join(command_line(p) for p in node_processes(second))
        assert "raylet" in victims and "DetectorWorker" in victims
        kill_node(second)  # the raylet, its agents and the worker at once, mid-slide
        _, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        watch.running = False
        watch.join()
    assert not node_processes(second), "the second node's processes outlived SIGKILL"
    assert proc.returncode == 0, err[-3000:]
    report = json.loads((out / "batch-report.json").read_text())
    assert sorted(Path(r["image"]).name for r in report) == sorted(f"img{k}.tiff" for k in range(N_IMAGES))  # each once
    assert all(r["status"] == "ok" for r in report), report
    for k in range(N_IMAGES):
        assert json.loads((out / f"img{k}.json").read_text())["type"] == "Multiple points"
        assert (out / "batch-fingerprints" / f"img{k}.json").is_file()
        for name in (f"img{k}.json", f"batch-fingerprints/img{k}.json"):
            assert len(watch.seen[name]) == 1, f"{name} was written {len(watch.seen[name])} times"
            assert (out / name).stat().st_ino in watch.seen[name]
    assert sorted(p.name for p in out.rglob("*") if ".tmp" in p.name or p.name.endswith(".partial")) == []
    inodes = {p.name: p.stat().st_ino for p in out.glob("img*.json")}

    rerun = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=180)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert {r["status"] for r in json.loads((out / "batch-report.json").read_text())} == {"skipped"}
    assert {p.name: p.stat().st_ino for p in out.glob("img*.json")} == inodes
