"""`midog batch` on Ray: outputs byte for byte those of `midog detect`, a bad file recorded
without losing the others, resume, a worker killed mid-slide, and joining a cluster.

Most tests share one in-process Ray session (Ray takes 5-15 s to start on 2 cores); the
outputs are compared with `midog detect` run in the same process, so both use the same
number of PyTorch threads (float32 sums depend on it in their last bit)."""

from __future__ import annotations

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from midog.pipeline import batch
from midog.commands.cli import main
from midog.synth import SCANNERS, synth_image, write_tiff

ROOT = Path(__file__).resolve().parent.parent
WEIGHTS = ROOT / "weights" / "demo-synthetic.pth"
COMMON = ["--weights", str(WEIGHTS), "--device", "cpu", "--style", "2022", "--no-progress"]


def make_image(path: Path, seed: int, width: int, height: int) -> Path:
    rgb, _ = synth_image(seed, 0, width, height)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_tiff(path, rgb, SCANNERS[0])
    return path


def tiny_tiff(path: Path) -> Path:
    """A file that only has to exist (input listing, fingerprints): no detection runs on it."""
    import numpy as np
    import tifffile

    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, np.random.default_rng(len(str(path))).integers(0, 255, (32, 32, 3), dtype=np.uint8), photometric="rgb")
    return path


def detect_bytes(images: list[Path], folder: Path) -> dict[str, bytes]:
    assert main(["detect", *map(str, images), "-o", str(folder) + "/", *COMMON]) == 0
    return {p.stem: (folder / f"{p.stem}.json").read_bytes() for p in images}


def read_report(out: Path) -> dict[str, dict]:
    rows = json.loads((out / batch.REPORT_NAME).read_text())
    assert all(set(r) == set(batch.REPORT_FIELDS) for r in rows)
    return {Path(r["image"]).name: r for r in rows}


def stats(paths: list[Path]) -> list[tuple[int, int]]:
    return [(p.stat().st_ino, p.stat().st_mtime_ns) for p in paths]


@pytest.fixture(scope="module")
def slides(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("slides")
    make_image(folder / "a.tiff", 1, 600, 600)
    make_image(folder / "sub" / "b.tiff", 2, 700, 520)
    (folder / "empty.tiff").write_bytes(b"")
    (folder / "notes.txt").write_text("not an image: folders are searched for image types only\n")
    return folder


@pytest.fixture(scope="module")
def reference(slides: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    return detect_bytes([slides / "a.tiff", slides / "sub" / "b.tiff"], tmp_path_factory.mktemp("reference"))


@pytest.fixture(scope="module")
def ray_session():
    import ray
    import torch

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # Room for two workers with as many threads each as `midog detect` uses here.
    ray.init(num_cpus=2 * torch.get_num_threads(), include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def first_run(ray_session, slides: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[int, Path]:
    out = tmp_path_factory.mktemp("batch") / "out"
    return main(["batch", str(slides), "--output", str(out), "--workers", "2", *COMMON]), out


def test_outputs_equal_midog_detect_and_bad_file_is_recorded(first_run, reference: dict[str, bytes]) -> None:
    code, out = first_run
    assert code == 1  # one image failed
    report = read_report(out)
    assert set(report) == {"a.tiff", "b.tiff", "empty.tiff"}
    bad = report["empty.tiff"]
    assert bad["status"] == "failed" and bad["output"] is None and "empty file" in bad["error"]
    for stem, expected in reference.items():
        row = report[f"{stem}.tiff"]
        assert row["status"] == "ok" and row["error"] is None and row["tiles"] == 4 and row["seconds"] > 0
        assert Path(row["output"]) == out / f"{stem}.json"
        assert (out / f"{stem}.json").read_bytes() == expected
    assert not (out / "empty.json").exists()
    with open(out / "batch-report.csv", newline="") as f:
        rows = {Path(r["image"]).name: r for r in csv.DictReader(f)}
    assert {k: r["status"] for k, r in rows.items()} == {k: r["status"] for k, r in report.items()}
    assert rows["empty.tiff"]["error"] == bad["error"]
    # Nothing half-written is left behind.
    assert not list(out.rglob("*.tmp"))


def test_rerun_skips_finished_and_redoes_changed(first_run, slides: Path, capsys) -> None:
    _, out = first_run
    finished = [out / "a.json", out / "b.json", out / batch.FINGERPRINT_DIR / "a.json", out / batch.FINGERPRINT_DIR / "b.json"]
    before = stats(finished)
    capsys.readouterr()
    assert main(["batch", str(slides), "--output", str(out), "--workers", "2", *COMMON]) == 1
    assert "0 ok, 1 failed, 2 skipped" in capsys.readouterr().err
    report = read_report(out)
    assert [report[n]["status"] for n in ("a.tiff", "b.tiff", "empty.tiff")] == ["skipped", "skipped", "failed"]
    assert stats(finished) == before  # nothing finished was rewritten

    # A changed input (new mtime) is redone; the unchanged one is still skipped.
    a = slides / "a.tiff"
    os.utime(a, ns=(a.stat().st_atime_ns, a.stat().st_mtime_ns + 10**9))
    assert main(["batch", str(a), str(slides / "sub" / "b.tiff"), "--output", str(out), "--workers", "1", *COMMON]) == 0
    report = read_report(out)
    assert report["a.tiff"]["status"] == "ok" and report["b.tiff"]["status"] == "skipped"
    assert stats([out / "b.json"]) == before[1:2] and stats([out / "a.json"]) != before[:1]

    # --force redoes even a finished image (a new file replaces the old one atomically).
    assert main(["batch", str(slides / "sub" / "b.tiff"), "--output", str(out), "--force", *COMMON]) == 0
    assert read_report(out)["b.tiff"]["status"] == "ok"
    assert stats([out / "b.json"]) != before[1:2]


def test_fingerprint_covers_input_weights_and_options(tmp_path: Path) -> None:
    image = tiny_tiff(tmp_path / "x.tiff")
    target = tmp_path / "out" / "x.json"
    record = {"input": batch.input_fingerprint(image), "weights_sha256": "w1", "settings": {"options": {"style": "2021"}}}
    assert not batch.is_finished(target, record)  # no output yet
    target.parent.mkdir()
    target.write_text("{}")
    batch.write_json_atomic(batch.fingerprint_path(target), record)
    assert batch.is_finished(target, record)
    assert not batch.is_finished(target, {**record, "weights_sha256": "w2"})
    assert not batch.is_finished(target, {**record, "settings": {"options": {"style": "2022"}}})
    with open(image, "r+b") as f:  # same size, different bytes at the end
        f.seek(-4, os.SEEK_END)
        f.write(b"\xff\xff\xff\xff")
    assert not batch.is_finished(target, {**record, "input": batch.input_fingerprint(image)})
    assert batch.input_fingerprint(tmp_path / "missing.tiff") is None


def _processes() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, command line) of every process, from /proc."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                found[int(entry.name)] = (ppid, (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
            except (OSError, IndexError, ValueError):
                continue  # exited meanwhile
    return found


def _descendants(root: int, table: dict[int, tuple[int, str]] | None = None) -> dict[int, str]:
    """pid -> command line of every process below `root`."""
    table = _processes() if table is None else table
    found: dict[int, str] = {}
    frontier = [root]
    while frontier:
        pid = frontier.pop()
        for child, (ppid, cmd) in table.items():
            if ppid == pid and child not in found:
                found[child] = cmd
                frontier.append(child)
    return found


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the worker's PID through /proc")
def test_worker_killed_mid_slide_is_retried(ray_session, slides: Path, reference: dict[str, bytes], tmp_path: Path) -> None:
    out = tmp_path / "out"
    inputs = [str(slides / "a.tiff"), str(slides / "sub" / "b.tiff")]
    result: dict[str, int] = {}
    run = threading.Thread(target=lambda: result.update(code=main(["batch", *inputs, "-o", str(out), "--workers", "2", *COMMON])))
    run.start()
    victim = None
    deadline = time.monotonic() + 180
    while victim is None and run.is_alive() and time.monotonic() < deadline:
        # Ray names a worker's process after the method it runs: this one is mid-slide.
        busy = [pid for pid, cmd in _descendants(os.getpid()).items() if cmd.startswith("ray::DetectorWorker.detect")]
        if busy:
            victim = busy[0]
            os.kill(victim, signal.SIGKILL)
        time.sleep(0.05)
    run.join(300)
    assert victim is not None, "no worker was seen processing a slide"
    assert not run.is_alive() and result["code"] == 0
    report = read_report(out)
    assert {n: r["status"] for n, r in report.items()} == {"a.tiff": "ok", "b.tiff": "ok"}
    for stem, data in reference.items():
        assert (out / f"{stem}.json").read_bytes() == data
    assert victim not in _descendants(os.getpid())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def ray_cluster():
    """A separately started one-node Ray cluster, torn down by PID whatever happens."""
    import torch

    threads = torch.get_num_threads()
    port, client_port = _free_port(), _free_port()
    temp = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # Ray's socket paths must stay short
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]), "RAY_USAGE_STATS_ENABLED": "0"}
    ray_cli = [sys.executable, "-c", "import sys; from ray.scripts.scripts import main; sys.argv[0] = 'ray'; main()"]
    start = [
        *ray_cli, "start", "--head", f"--port={port}", f"--ray-client-server-port={client_port}", "--node-ip-address=127.0.0.1",
        f"--num-cpus={threads}", "--num-gpus=0", "--include-dashboard=false", f"--temp-dir={temp}", "--disable-usage-stats",
    ]  # fmt: skip
    markers = [temp, f":{port} ", f"--port={client_port} "]  # (command lines end in a space here)
    try:
        subprocess.run(start, env=env, check=True, capture_output=True, timeout=120)
        yield f"127.0.0.1:{port}", threads, env
    finally:
        # Ray daemonises its processes; find them by their session folder or address.
        table = _processes()
        ours = {pid for pid, (_, cmd) in table.items() if any(m in cmd for m in markers) and pid != os.getpid()}
        for pid in ours | {d for pid in ours for d in _descendants(pid, table)}:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        subprocess.run(["rm", "-rf", temp], check=False)


def test_address_joins_a_running_cluster(ray_cluster, slides: Path, reference: dict[str, bytes], tmp_path: Path) -> None:
    address, threads, env = ray_cluster
    listing = tmp_path / "slides.txt"
    listing.write_text(f"# a list of slides\n{slides / 'a.tiff'}\n{slides / 'sub' / 'b.tiff'}\n")
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "midog.commands.cli", "batch", str(listing), "-o", str(out), "--address", address]
    proc = subprocess.run(
        [*cmd, "--workers", "1", "--cpus-per-worker", str(threads), *COMMON], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    assert "2 ok, 0 failed, 0 skipped" in proc.stderr
    assert {n: r["status"] for n, r in read_report(out).items()} == {"a.tiff": "ok", "b.tiff": "ok"}
    for stem, data in reference.items():
        assert (out / f"{stem}.json").read_bytes() == data


def test_inputs_folders_globs_and_lists(tmp_path: Path) -> None:
    a = tiny_tiff(tmp_path / "d" / "a.tif")
    b = tiny_tiff(tmp_path / "d" / "e" / "b.TIFF")
    (tmp_path / "d" / "e" / "readme.md").write_text("x")
    c = tiny_tiff(tmp_path / "c.tiff")
    assert batch.collect_images([str(tmp_path / "d")]) == [a, b]
    assert batch.collect_images([str(tmp_path / "*.tiff"), str(c)]) == [c]  # each image once
    (tmp_path / "list.txt").write_text("# cohort\nc.tiff\n\nmissing.tiff\n")
    assert batch.collect_images([str(tmp_path / "list.txt")]) == [c, tmp_path / "missing.tiff"]
    (tmp_path / "list.csv").write_text(f"case,image\n1,{a}\n2,d/e/b.TIFF\n")
    assert batch.collect_images([str(tmp_path / "list.csv")]) == [a, b]
    with pytest.raises(batch.MidogError, match="no file matches"):
        batch.collect_images([str(tmp_path / "*.svs")])
    with pytest.raises(batch.MidogError, match="no such file"):
        batch.collect_images([str(tmp_path / "nope.tiff")])


def test_duplicate_stems_are_refused_up_front(tmp_path: Path, capsys) -> None:
    tiny_tiff(tmp_path / "x" / "s.tiff")
    tiny_tiff(tmp_path / "y" / "s.tiff")
    assert main(["batch", str(tmp_path / "x"), str(tmp_path / "y"), "-o", str(tmp_path / "out"), *COMMON]) == 1
    assert "share a file name stem" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_without_ray_says_how_to_install(monkeypatch, tmp_path: Path, capsys) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    assert main(["batch", str(tmp_path), "-o", str(tmp_path / "out")]) == 2
    assert 'pip install "midog[distributed]"' in capsys.readouterr().err


def test_worker_plan() -> None:
    two_nodes = [{"CPU": 16.0}, {"CPU": 8.0, "GPU": 2.0}]
    assert batch.plan_workers(two_nodes, "auto", None, None, None) == (2, 1, 1.0)  # one per GPU
    assert batch.plan_workers(two_nodes, "auto", None, None, 0.5) == (4, 1, 0.5)  # two share a GPU
    assert batch.plan_workers(two_nodes, "cpu", None, None, None) == (3, 8, 0.0)  # a node's CPUs each
    assert batch.plan_workers([{"CPU": 4.0}], "auto", 2, None, None, node_cores=2) == (2, 2, 0.0)
    with pytest.raises(batch.MidogError, match="no GPU"):
        batch.plan_workers([{"CPU": 4.0}], "cuda", None, None, None)


def test_evaluate_reads_a_batch_folder(first_run) -> None:
    from midog.evaluation.io import read_predictions

    _, out = first_run
    assert set(read_predictions(out)) == {"a", "b"}  # not the report, not the fingerprints


def test_exports_and_count_equal_midog_detect(ray_session, slides: Path, tmp_path: Path) -> None:
    """--export and --count go to the workers as they go to `midog detect`: the same files."""
    image = slides / "a.tiff"
    extras = ["--export", "csv", "--export", "geojson", "--count"]
    assert main(["detect", str(image), "-o", str(tmp_path / "detect") + "/", *COMMON, *extras]) == 0
    assert main(["batch", str(image), "--output", str(tmp_path / "batch"), "--workers", "1", *COMMON, *extras]) == 0
    for name in ("a.json", "a.csv", "a.geojson", "a.count.json"):
        assert (tmp_path / "batch" / name).read_bytes() == (tmp_path / "detect" / name).read_bytes(), name


class _Ref:
    def __init__(self, value: object = None, error: BaseException | None = None) -> None:
        self.value, self.error = value, error


class _StandInRay:
    """Enough of Ray for `_dispatch`: actors answer at once; the actors listed in `lost`
    answer every slide with ActorUnavailableError, as a worker on a node that has just died
    does once Ray's own retries are spent."""

    def __init__(self, lost: set[int]) -> None:
        import ray

        self.exceptions = ray.exceptions
        self.lost, self.actors, self.killed, self.ran = lost, 0, [], []

    def make_actor(self) -> object:
        number, stand_in = self.actors, self
        self.actors += 1

        class Method:
            def __init__(self, work) -> None:
                self.work = work

            def remote(self, *args: object) -> _Ref:
                return self.work(*args)

        def detect(image: str, target: str, record: object) -> _Ref:
            if number in stand_in.lost:
                return _Ref(error=stand_in.exceptions.ActorUnavailableError("RpcError: failed to connect to all addresses", None))
            stand_in.ran.append((number, Path(image).name))
            return _Ref({"status": "ok", "seconds": 0.0, "tiles": 1})

        actor = type("Actor", (), {})()
        actor.number, actor.pid, actor.detect = number, Method(lambda: _Ref(number)), Method(detect)
        return actor

    def wait(self, refs: list, num_returns: int, timeout: float) -> tuple[list, list]:
        return refs[:1], refs[1:]

    def get(self, ref: _Ref) -> object:
        if ref.error is not None:
            raise ref.error
        return ref.value

    def kill(self, actor: object, no_restart: bool = False) -> None:
        self.killed.append((actor.number, no_restart))


def _dispatch_with(stand_in: _StandInRay, n_images: int, workers: int) -> dict[int, dict]:
    results: dict[int, dict] = {}
    images = [Path(f"img{k}.tiff") for k in range(n_images)]
    batch._dispatch(stand_in, stand_in.make_actor, workers, "1 CPU", list(range(n_images)), images,
                    [Path(f"out/img{k}.json") for k in range(n_images)], results.__setitem__, [None] * n_images)
    return results


def test_a_slide_whose_worker_becomes_unreachable_goes_to_another_worker() -> None:
    """The CI failure this guards against: a node killed mid-slide made its worker
    unreachable, Ray's retries all went to it within milliseconds, and the slide was recorded
    as failed ("died on this slide 3 times") though nothing was wrong with it."""
    pytest.importorskip("ray", reason="midog batch needs Ray")
    stand_in = _StandInRay(lost={1})  # the second worker's node is gone
    results = _dispatch_with(stand_in, n_images=4, workers=2)
    assert sorted(results) == [0, 1, 2, 3] and all(r["status"] == "ok" for r in results.values()), results
    assert sorted(name for _, name in stand_in.ran) == [f"img{k}.tiff" for k in range(4)]  # each slide run once
    assert (1, True) in stand_in.killed and 1 not in {n for n, _ in stand_in.ran}


def test_a_slide_whose_workers_stay_unreachable_fails_with_its_name() -> None:
    pytest.importorskip("ray", reason="midog batch needs Ray")
    stand_in = _StandInRay(lost=set(range(100)))  # no worker is ever reachable
    results = _dispatch_with(stand_in, n_images=2, workers=1)
    assert all(r["status"] == "failed" for r in results.values())
    error = results[0]["error"]
    assert error.startswith("img0.tiff: the worker process became unreachable") and f"{batch.UNREACHABLE_REQUEUES + 1} times" in error
    assert stand_in.actors <= 2 * (batch.UNREACHABLE_REQUEUES + 1) + 1  # requeues are bounded: no endless new workers
