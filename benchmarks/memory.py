"""Memory over a long run: peak RSS after the first and after the last of many small images,
for `midog detect`'s per-image path and for one `midog batch` worker (a Ray actor).

    python benchmarks/memory.py [--images 200] [--size 512] [--device cpu] [--skip-batch]

Makes `--images` synthetic region TIFFs (cached in benchmarks/.cache/memory/). `detect`
runs them one after another in this process through `detect_or_error`, what `midog detect`
runs per image, with one loaded Detector; `batch` starts a local Ray (as `midog batch`
does, on the loopback address), one `DetectorWorker` actor, and sends it the images one at
a time, reading the actor process's own figures. After image 1, 10, 50, 100 and the last it
records VmRSS (resident now) and VmHWM (peak resident so far) from /proc/PID/status. Flat
means the last peak is within a few MB of the first. Weights: the shipped demo network.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CACHE = HERE / ".cache" / "memory"
WEIGHTS = ROOT / "weights" / "demo-synthetic.pth"
CHECKPOINTS = (1, 10, 50, 100)


def make_images(n: int, size: int) -> list[Path]:
    import numpy as np
    import tifffile

    folder = CACHE / f"{n}x{size}"
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k in range(n):
        path = folder / f"img{k:03d}.tiff"
        if not path.exists():
            rgb = np.random.default_rng(k).integers(0, 255, (size, size, 3), dtype=np.uint8)
            tifffile.imwrite(path, rgb, photometric="rgb", resolution=(40000, 40000), resolutionunit="CENTIMETER")
        paths.append(path)
    return paths


def memory_mb(pid: int | str = "self") -> dict[str, float]:
    """VmRSS and VmHWM of a process, in MB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024
    return fields


def record(table: list[dict], k: int, n: int, mem: dict[str, float], started: float) -> None:
    if k in CHECKPOINTS or k == n:
        table.append({"image": k, "rss_mb": round(mem["VmRSS"], 1), "peak_mb": round(mem["VmHWM"], 1), "seconds": round(time.perf_counter() - started, 1)})
        print(f"  image {k:4d}: RSS {mem['VmRSS']:7.1f} MB, peak {mem['VmHWM']:7.1f} MB", file=sys.stderr, flush=True)


def run_detect(images: list[Path], out: Path, device: str) -> list[dict]:
    from midog.pipeline.image import detect_or_error
    from midog.pipeline.run import settle_run

    run = settle_run(WEIGHTS, device=device)
    detector = run.detector()
    table: list[dict] = []
    started = time.perf_counter()
    for k, image in enumerate(images, 1):
        _, error, _, _ = detect_or_error(detector, image, out / f"{image.stem}.json", run)
        assert error is None, error
        record(table, k, len(images), memory_mb(), started)
    return table


def run_batch_worker(images: list[Path], out: Path, device: str) -> list[dict]:
    import ray
    import torch

    from midog.pipeline.batch import DetectorWorker
    from midog.pipeline.cluster import connect
    from midog.pipeline.run import settle_run

    run = settle_run(WEIGHTS, device=device)
    threads = torch.get_num_threads()
    connect(ray, None, threads)
    try:
        worker = ray.remote(DetectorWorker).options(num_cpus=threads).remote(run, threads)
        pid = ray.get(worker.pid.remote())
        table: list[dict] = []
        started = time.perf_counter()
        for k, image in enumerate(images, 1):
            result = ray.get(worker.detect.remote(str(image), str(out / f"{image.stem}.json")))
            assert result["status"] == "ok", result
            record(table, k, len(images), memory_mb(pid), started)
        return table
    finally:
        ray.shutdown()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=200)
    p.add_argument("--size", type=int, default=512, help="side of each image in px (512: one network tile)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--skip-batch", action="store_true", help="only the midog detect path (no Ray needed)")
    args = p.parse_args()
    sys.path.insert(0, str(ROOT))
    import tempfile

    images = make_images(args.images, args.size)
    results: dict[str, object] = {"images": args.images, "size": args.size, "device": args.device, "machine": platform.machine(), "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory() as tmp:
        print("midog detect path (this process):", file=sys.stderr)
        (Path(tmp) / "detect").mkdir()
        results["detect"] = run_detect(images, Path(tmp) / "detect", args.device)
        if not args.skip_batch:
            print("one midog batch worker (Ray actor):", file=sys.stderr)
            (Path(tmp) / "batch").mkdir()
            results["batch_worker"] = run_batch_worker(images, Path(tmp) / "batch", args.device)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
