"""`midog batch`: a cohort of slides on Ray, one loaded detector per worker.

Ray is an optional dependency (`pip install "midog[distributed]"`): the driver lists the
images, skips those already finished, and hands one slide at a time to each worker, a Ray
actor that keeps its `Detector` loaded and writes through `detect_to_file`, the function
`midog detect` writes with, so each output has the bytes `midog detect` would write.

Nothing is lost: a failing image is recorded and the others go on; a worker process that
dies is restarted by Ray and its slide retried (bounded); every finished image gets a
fingerprint sidecar (input size, mtime, hash of its first and last bytes; weights hash;
options), so a rerun skips what is finished and redoes what changed (`batch_inputs`).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import time
import uuid
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from ..atomic import output_lock, remove_stale_temp, write_json_atomic, write_text_atomic
from .cluster import connect
from .inputs import (
    FINGERPRINT_BYTES,
    FINGERPRINT_DIR,
    IMAGE_SUFFIXES,
    LIST_SUFFIXES,
    REPORT_FIELDS,
    REPORT_NAME,
    collect_images,
    fingerprint_path,
    input_fingerprint,
    is_finished,
    output_targets,
)
from ..results.sidecar import file_sha256, sidecar_path
from .image import detect_or_error
from .run import RunSettings
from ..errors import MidogError, UsageError, WriteError, describe

log = logging.getLogger(__name__)

__all__ = [
    "FINGERPRINT_BYTES",
    "FINGERPRINT_DIR",
    "IMAGE_SUFFIXES",
    "LIST_SUFFIXES",
    "REPORT_FIELDS",
    "REPORT_NAME",
    "DetectorWorker",
    "collect_images",
    "file_sha256",
    "fingerprint_path",
    "input_fingerprint",
    "is_finished",
    "output_targets",
    "plan_workers",
    "require_ray",
    "run_batch",
]

# A slide whose worker dies this many more times is recorded as failed (Ray retries it).
TASK_RETRIES = 2
UNREACHABLE_REQUEUES = 3  # times a slide whose worker's node stops answering is queued again
INSTALL_HINT = 'midog batch needs Ray: pip install "midog[distributed]" (or pip install "ray[client]")'


# ---------------------------------------------------------------------------
# Worker
# ---------------------------------------------------------------------------


class DetectorWorker:
    """One Ray actor: a loaded detector that runs whole slides, one at a time."""

    def __init__(self, run: RunSettings, threads: int) -> None:
        import torch

        torch.set_num_threads(threads)
        self.run = run
        self.detector = run.detector()

    def pid(self) -> int:
        return os.getpid()

    def detect(self, image: str, target: str, record: dict[str, Any] | None = None) -> dict[str, Any]:
        """Detect and write one image; an error is returned, not raised, so the driver
        records it and the worker goes on with the next slide.

        With `record` (the image's fingerprint and this run's id) the worker commits the
        image itself: the fingerprint sidecar is written right after the output, here, not
        by the driver when the answer arrives. So when a node is lost after it wrote an
        output but before its answer reached the driver, the retry on another worker finds
        the image committed by this run and answers at once instead of writing it again."""
        started = time.perf_counter()
        if record is not None and _committed_in_run(Path(target), record):
            stored = json.loads(fingerprint_path(Path(target)).read_text())
            return {"status": "ok", "error": None, "seconds": 0.0, "tiles": stored.get("tiles"), "disk_full": False, "committed": True}
        # The same per-image error handling as `midog detect`: any failure becomes one line
        # and leaves no earlier output for that image behind.
        disk_full, info = False, {}
        try:
            _, error, info, _ = detect_or_error(self.detector, Path(image), Path(target), self.run)
        except WriteError as exc:  # the output disk is full: the driver stops handing out slides
            error, disk_full = str(exc), True
        committed = False
        if not error and record is not None:
            try:
                write_json_atomic(fingerprint_path(Path(target)), {"image": image, **record, "tiles": info.get("tiles")})
                committed = True
            except WriteError:  # the driver writes it when the answer arrives
                pass
        return {
            "status": "failed" if error else "ok",
            "error": error,
            "seconds": round(time.perf_counter() - started, 3),
            "tiles": info.get("tiles"),
            "disk_full": disk_full,
            "committed": committed,
        }


def _committed_in_run(target: Path, record: dict[str, Any]) -> bool:
    """The output and the fingerprint of this very run (its "run" id) are both there."""
    try:
        stored = json.loads(fingerprint_path(target).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(stored, dict) and stored.get("run") == record.get("run") and is_finished(target, record)


# ---------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------


def _detect_threads() -> int:
    """The PyTorch threads `midog detect` runs with on this machine."""
    import torch

    return torch.get_num_threads()


def plan_workers(
    nodes: list[dict[str, float]],
    device: str,
    workers: int | None,
    cpus_per_worker: int | None,
    gpus_per_worker: float | None,
    node_cores: int | None = None,
) -> tuple[int, int, float]:
    """(workers, CPUs each, GPUs each) from the Ray nodes' resources.

    With GPUs: one worker per GPU, 1 CPU each. On CPUs: each worker takes as many CPUs
    (and PyTorch threads) as the smallest node has (`node_cores`: for a local Ray, whose
    logical CPUs are sized for the workers, this machine's), which is what `midog detect` uses
    there: float32 sums depend on the thread count in their last bit, so this keeps the
    outputs byte-identical to `midog detect`. Fewer CPUs per worker can run more workers
    per node, at the price of that last bit."""
    cpus = [n.get("CPU", 0.0) for n in nodes if n.get("CPU", 0.0) >= 1]
    gpus = sum(n.get("GPU", 0.0) for n in nodes)
    if gpus_per_worker is None:
        gpus_per_worker = 1.0 if gpus and device != "cpu" else 0.0
    if gpus_per_worker and not gpus:
        raise MidogError("--gpus-per-worker was given, but the Ray cluster has no GPU")
    if device.startswith("cuda") and not gpus_per_worker:
        raise MidogError("--device cuda needs a GPU per worker, but the Ray cluster has no GPU")
    if not cpus:
        raise MidogError("the Ray cluster has no CPU for a worker")
    if cpus_per_worker is None:
        cpus_per_worker = 1 if gpus_per_worker else int(node_cores or min(cpus))
    if workers is None:
        workers = int(gpus // gpus_per_worker) if gpus_per_worker else sum(int(c // cpus_per_worker) for c in cpus)
    return max(1, workers), max(1, cpus_per_worker), gpus_per_worker


def _write_report(folder: Path, rows: list[dict[str, Any]]) -> Path:
    path = write_json_atomic(folder / REPORT_NAME, rows)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=REPORT_FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(path.with_suffix(".csv"), buffer.getvalue())
    return path


def require_ray() -> None:
    """Ray is installed, or a UsageError (exit 2) that says how to install it: checked
    first, before the run is settled or any input read."""
    try:
        import ray  # noqa: F401  (installed?)
    except ImportError:
        raise UsageError(INSTALL_HINT) from None


def run_batch(
    inputs: list[str],
    output: Path,
    run: RunSettings,
    workers: int | None = None,
    address: str | None = None,
    gpus_per_worker: float | None = None,
    cpus_per_worker: int | None = None,
    force: bool = False,
    progress: bool = True,
    dashboard: bool = False,
) -> int:
    """Run every image, write the report; 0 when none failed, 1 when any did, 2 without Ray.
    One run at a time per output folder (`output_lock`); a second is refused (exit 2)."""
    require_ray()
    started = time.perf_counter()
    images = collect_images(inputs)
    if output.exists() and not output.is_dir():
        raise MidogError(f"{output}: --output must be a folder")
    output = output.resolve()
    targets = output_targets(images, output)
    with output_lock(output):
        if (output / FINGERPRINT_DIR).is_symlink():  # its sidecars would be written wherever it points
            raise MidogError(f"{output / FINGERPRINT_DIR}: is a symbolic link; remove it (midog batch makes this folder itself)")
        return _run_locked(images, targets, output, run, workers, address, gpus_per_worker, cpus_per_worker, force, progress, dashboard, started)


def _run_locked(
    images: list[Path], targets: list[Path], output: Path, run: RunSettings, workers: int | None,
    address: str | None, gpus_per_worker: float | None, cpus_per_worker: int | None, force: bool, progress: bool,
    dashboard: bool, started: float,
) -> int:
    import ray
    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    # Everything that changes an output's bytes, as JSON (the fingerprint stores it so):
    # limits, the time budget and the device decide whether and where an image runs, not
    # its bytes (float32 either way), so a rerun with other ones still skips what is done.
    changes_bytes = {"style": run.style, "mpp": run.mpp, "tissue_only": run.tissue_only}
    extras = asdict(run.extras) if run.extras else None
    settings = json.loads(json.dumps({"options": changes_bytes, "threshold": run.threshold, "fast": run.fast, "extras": extras}))
    weights_sha256 = file_sha256(run.weights)
    run_id = uuid.uuid4().hex  # marks the fingerprints this run commits (DetectorWorker.detect)
    records = [{"input": input_fingerprint(p), "weights_sha256": weights_sha256, "settings": settings, "run": run_id} for p in images]

    rows: list[dict[str, Any]] = [
        {"image": str(p), "status": None, "output": str(t), "error": None, "seconds": None, "tiles": None} for p, t in zip(images, targets)
    ]
    todo = []
    for i, (target, record) in enumerate(zip(targets, records)):
        if not force and is_finished(target, record):
            rows[i]["status"] = "skipped"
        else:
            todo.append(i)
    output.mkdir(parents=True, exist_ok=True)

    bar = tqdm(total=len(images), initial=len(images) - len(todo), desc="slides", unit="slide", disable=not progress)
    tiles_done = 0

    def finish(i: int, result: dict[str, Any]) -> None:
        nonlocal tiles_done
        rows[i].update({k: v for k, v in result.items() if k in REPORT_FIELDS})
        if result["status"] == "ok":
            # The sidecar follows the output: an image counts as finished only once both exist.
            if not result.get("committed"):  # the worker writes it itself (DetectorWorker.detect)
                write_json_atomic(fingerprint_path(targets[i]), {"image": str(images[i]), **records[i], "tiles": result["tiles"]})
            tiles_done += result["tiles"] or 0
        else:
            rows[i]["output"] = None
            with logging_redirect_tqdm():  # the line above the progress bar, not through it
                log.error("midog batch: error: %s", result["error"])
        bar.update(1)

    started_ray = False
    try:
        if todo:
            local_cores = None if address else _detect_threads()
            # Logical CPUs of a local Ray: room for every worker asked for, each with its threads.
            cpus = max(os.cpu_count() or 1, (workers or 1) * (cpus_per_worker or local_cores or 1))
            started_ray = connect(ray, address, cpus, dashboard)
            nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
            n_workers, cpus_each, gpus_each = plan_workers(nodes, run.device, workers, cpus_per_worker, gpus_per_worker, local_cores)
            actor_options = dict(num_cpus=cpus_each, num_gpus=gpus_each, max_restarts=-1, max_task_retries=TASK_RETRIES)
            worker_cls = ray.remote(DetectorWorker).options(**actor_options)

            # A worker without a GPU of its own stays off the node's GPUs.
            worker_run = replace(run, weights=run.weights.resolve(), device=run.device if run.device != "auto" or gpus_each else "cpu")

            def make_actor() -> Any:
                return worker_cls.remote(worker_run, cpus_each)

            resources = f"{cpus_each} CPUs and {gpus_each:g} GPUs per worker"
            _dispatch(ray, make_actor, min(n_workers, len(todo)), resources, todo, images, targets, finish, records)
    except KeyboardInterrupt as exc:  # Ctrl-C or SIGTERM (errors.Interrupted)
        for row in rows:
            if row["status"] is None:
                row.update(status="failed", output=None, error=f"{row['image']}: {describe(exc)} before it finished")
        _write_report(output, rows)
        raise
    finally:
        bar.close()
        if started_ray:
            ray.shutdown()
        # Workers stopped mid-write leave their temporary files; only those no live writer holds go.
        remove_stale_temp([t for i in todo for t in (targets[i], sidecar_path(targets[i]), fingerprint_path(targets[i]))])

    report = _write_report(output, rows)
    wall = time.perf_counter() - started
    counts = {s: sum(r["status"] == s for r in rows) for s in ("ok", "failed", "skipped")}
    log.info(
        "midog batch: %d ok, %d failed, %d skipped in %.1f s (%.0f slides/h, %.2f tiles/s); report: %s",
        counts["ok"], counts["failed"], counts["skipped"], wall, counts["ok"] / wall * 3600, tiles_done / wall, report,
    )
    return 1 if counts["failed"] else 0


def _dispatch(
    ray: Any,
    make_actor: Any,
    n_workers: int,
    resources: str,
    todo: list[int],
    images: list[Path],
    targets: list[Path],
    finish: Any,
    records: list[dict[str, Any]],
) -> None:
    """Hand one slide at a time to each ready worker until every slide has a result.

    A worker gets work only once its model is loaded (its pid() answered), so a worker that
    the cluster cannot place never holds a slide hostage. A slide whose worker died more
    than TASK_RETRIES times is recorded as failed and its worker replaced; a worker that
    cannot even start (bad weights, no device) fails the remaining slides with its error.

    A worker whose node stops answering spends Ray's retries at once; its slide is requeued.
    """
    queue = list(reversed(todo))
    pending: dict[Any, tuple[Any, int | None]] = {}  # ref -> (actor, image index or None for start-up)
    for _ in range(n_workers):
        actor = make_actor()
        pending[actor.pid.remote()] = (actor, None)
    start_error: str | None = None
    waited = 0.0
    requeued: dict[int, int] = {}  # image index -> times its worker became unreachable
    # Done when no slide is queued or running; workers the cluster never placed are left.
    while any(i is not None for _, i in pending.values()) or (queue and pending):
        done, _ = ray.wait(list(pending), num_returns=1, timeout=30)
        if not done:
            waited += 30
            if waited == 120 and not any(i is not None for _, i in pending.values()):
                log.warning("midog batch: no worker has started after %.0f s: can the cluster place one (%s)?", waited, resources)
            continue
        actor, i = pending.pop(done[0])
        try:
            result = ray.get(done[0])
        except ray.exceptions.RayError as exc:
            if i is None:  # this worker could not start; the others carry on
                start_error, actor = _last_line(exc), None
            elif isinstance(exc, ray.exceptions.RayActorError):
                unreachable = isinstance(exc, ray.exceptions.ActorUnavailableError)
                if unreachable and requeued.get(i, 0) < UNREACHABLE_REQUEUES:
                    requeued[i] = requeued.get(i, 0) + 1
                    log.warning("midog batch: %s: its worker became unreachable (%s); another takes it", images[i], _last_line(exc))
                    queue.append(i)
                else:
                    how = f"became unreachable {requeued.get(i, 0) + 1} times" if unreachable else f"died on this slide {TASK_RETRIES + 1} times"
                    finish(i, {"status": "failed", "error": f"{images[i]}: the worker process {how} ({_last_line(exc)})", "seconds": None, "tiles": None})
                ray.kill(actor, no_restart=True)
                replacement = make_actor()
                pending[replacement.pid.remote()] = (replacement, None)
                actor = None
            else:
                finish(i, {"status": "failed", "error": f"{images[i]}: {_last_line(exc)}", "seconds": None, "tiles": None})
        else:
            if i is not None:
                finish(i, result)
                if result.get("disk_full"):
                    while queue:
                        j = queue.pop()
                        finish(j, {"status": "failed", "error": f"{images[j]}: not run: {result['error']}", "seconds": None, "tiles": None})
        if actor is not None and queue:
            j = queue.pop()
            pending[actor.detect.remote(str(images[j]), str(targets[j]), records[j])] = (actor, j)
        elif actor is not None:
            # Nothing left to hand out: release the worker's CPUs and GPU, so that a worker
            # Ray restarts after losing a node (with the slide it held) can be placed.
            ray.kill(actor)
        if not pending:
            while queue:
                j = queue.pop()
                error = f"{images[j]}: not run, no worker could start: {start_error}"
                finish(j, {"status": "failed", "error": error, "seconds": None, "tiles": None})


def _last_line(exc: BaseException) -> str:
    """Ray's errors carry the remote traceback; its last line is the cause."""
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else type(exc).__name__
