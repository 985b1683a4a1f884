"""Images per hour of `midog batch` on a local Ray, by number of workers.

    python benchmarks/batch.py [--images 8] [--size 1024] [--device cpu|cuda] [--configs 1 2 2:1]

Makes `--images` synthetic region TIFFs (cached in benchmarks/.cache/batch/), then runs
`midog batch --force` once per configuration, each in its own process with its own local
Ray: `W` is W workers with the default CPUs each (as many as `midog detect` uses, which
keeps outputs byte-identical to it), `W:C` is W workers of C CPUs (PyTorch threads) each,
`W:C:G` adds G GPUs each (0.5: two workers share a GPU). Prints per configuration the
wall time (Ray start-up and model loading included), images per hour over that wall time,
images per hour once running (workers x 3600 / mean seconds per image in the report:
what a long cohort approaches) and tiles per second over the wall time. Weights: the shipped trained network.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CACHE = HERE / ".cache" / "batch"
WEIGHTS = ROOT / "weights" / "demo-synthetic.pth"


def make_images(n: int, size: int) -> Path:
    from midog.synth import SCANNERS, synth_image, write_tiff

    folder = CACHE / f"{n}x{size}"
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(n):
        path = folder / f"img{k:03d}.tiff"
        if not path.exists():
            rgb, _ = synth_image(k, k % 3, size, size)
            write_tiff(path, rgb, SCANNERS[k % 3])
    return folder


def run(config: str, folder: Path, device: str) -> dict[str, float]:
    workers, cpus, gpus = (config.split(":") + [None, None])[:3]
    out = CACHE / f"out-{config.replace(':', '_')}"
    cmd = [sys.executable, "-m", "midog.commands.cli", "batch", str(folder), "-o", str(out), "--force", "--no-progress"]
    cmd += ["--weights", str(WEIGHTS), "--device", device, "--workers", workers]
    cmd += ["--cpus-per-worker", cpus] if cpus else []
    cmd += ["--gpus-per-worker", gpus] if gpus else []
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    started = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{config}: midog batch failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    rows = json.loads((out / "batch-report.json").read_text())
    # Once running, each worker finishes an image every mean(seconds): what a long cohort
    # approaches, without Ray's start-up and model loading.
    mean_seconds = sum(r["seconds"] for r in rows) / len(rows)
    steady = min(int(workers), len(rows)) * 3600 / mean_seconds
    tiles = sum(r["tiles"] or 0 for r in rows)
    return {"wall": wall, "per_hour": len(rows) / wall * 3600, "steady_per_hour": steady, "tiles_per_s": tiles / wall, "seconds": mean_seconds}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--configs", nargs="+", default=["1", "2", "2:1"])
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    folder = make_images(args.images, args.size)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, load {load:.1f}; {args.images} images of {args.size} px, device {args.device}")
    print("config   wall s   images/h (wall)   s/image/worker   images/h (running)   tiles/s")
    for config in args.configs:
        r = run(config, folder, args.device)
        print(
            f"{config:<8} {r['wall']:6.1f}   {r['per_hour']:15.0f}   {r['seconds']:14.1f}   {r['steady_per_hour']:18.0f}   {r['tiles_per_s']:7.2f}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
