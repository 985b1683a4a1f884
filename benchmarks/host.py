"""The host side of detection, measured without a GPU: everything but the network.

    python benchmarks/host.py [--device cpu|cuda] [--cpus N] [--threads 1,2,4] [--repeats 2]

The detector runs with its network replaced by a zero-cost stand-in that returns
all-background outputs of the network's shapes, so what is timed is reading, staging,
copying, normalising and post-processing. Two images: the 7215 x 5412 region as a
zlib strip TIFF (the MIDOG files' layout) and the same pixels as a JPEG-tiled pyramidal
slide (512 px tiles, a scanner's layout). For each, and each reader-thread count (1, 2, 4,
8, 16 up to the usable cores): decode-alone MP/s (tifffile decoding the whole image with
that many threads), tiles-read MP/s (every tile the detector reads, batched, no network)
and pipeline MP/s (the detector's whole loop, stand-in network), with the CPU seconds each
used. Then the time per stage of one pipeline run. MP/s are of the image's area. The best
of `--repeats` runs counts.

`--cpus N` restricts the process to N CPUs (affinity, torch threads, reader threads): the
platform's GPU instance has 4 vCPUs, so `--cpus 4` on any machine with 4 or more cores
shows the host rate it can feed its GPU (docs/performance.md).

The last line is machine-readable, for the strip TIFF region at the usable core count:
host_vs_decode=<pipeline / decode-alone> host_vs_tiles=<pipeline / tiles-read>
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from run import CACHE, REGION, cpu_name, prepare  # noqa: E402

JPEG_SLIDE = CACHE / "region_7215x5412_jpeg_tiled.tiff"


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def restrict_cpus(n: int) -> str:
    """Pin this process (and the threads it starts) to its first n usable CPUs."""
    import torch

    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    note = ""
    if cores and len(cores) >= n:
        os.sched_setaffinity(0, cores[:n])
    else:
        note = f" (only {len(cores) or os.cpu_count()} cores here: the figures are for those)"
    torch.set_num_threads(min(n, usable_cores()))
    return f"restricted to {min(n, usable_cores())} CPUs{note}"


def make_jpeg_slide() -> None:
    """The region's pixels as a pyramidal TIFF of 512 px JPEG tiles (quality 90), 3 levels."""
    if JPEG_SLIDE.exists():
        return
    import tifffile

    from midog.atomic import atomic_path

    print("making the JPEG-tiled slide (once) ...", flush=True)
    with tifffile.TiffFile(REGION) as tif:
        pixels = tif.asarray()
        resolution, unit = tif.pages[0].tags["XResolution"].value, tif.pages[0].tags["ResolutionUnit"].value
    res = resolution[0] / resolution[1]
    with atomic_path(JPEG_SLIDE) as tmp, tifffile.TiffWriter(tmp, bigtiff=True) as out:
        for level in range(3):
            f = 4**level
            out.write(np.ascontiguousarray(pixels[::f, ::f]), tile=(512, 512), photometric="rgb", compression="jpeg",
                      compressionargs={"level": 90}, resolution=(res / f, res / f), resolutionunit=unit,
                      subfiletype=1 if level else 0, metadata=None)


class StandIn:
    """The network's outputs for an all-background tile, at no cost: class logits of -30
    (probability ~1e-13) and zero box deltas, broadcast to the batch. Post-processing still
    runs over every anchor of every tile."""

    def __init__(self, anchors: int, classes: int, device: Any) -> None:
        import torch

        self.logits = torch.full((1, anchors, classes), -30.0, device=device)
        self.deltas = torch.zeros((1, anchors, 4), device=device)

    def __call__(self, batch: Any) -> tuple[Any, Any]:
        n = batch.shape[0]
        return self.logits.expand(n, -1, -1), self.deltas.expand(n, -1, -1)


def make_detector(device: str, workers: int) -> Any:
    import torch

    from midog.detector import Detector
    from midog.detector.device import pick_device
    from midog.network.anchors import make_anchors
    from midog.network.retinanet import RetinaNetDA

    # Any network of the reference's shape will do (the stand-in replaces it): no weights
    # file is needed, so the GPU machine runs this without the shipped weights.
    torch.manual_seed(0)
    detector = Detector(RetinaNetDA().to(pick_device(device)), workers=workers)
    stand_in = StandIn(len(make_anchors(detector.config)), detector.config.n_classes, detector.device)
    detector.model = detector.eager = stand_in
    detector.compiled = False
    return detector


def sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def best(fn: Callable[[], Any], repeats: int, device: str) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of the fastest of `repeats` calls."""
    runs = []
    for _ in range(repeats):
        sync(device)
        start, cpu = time.perf_counter(), time.process_time()
        fn()
        sync(device)
        runs.append((time.perf_counter() - start, time.process_time() - cpu))
    return min(runs)


def interleaved(runs: dict[str, Callable[[], Any]], repeats: int, device: str) -> dict[str, tuple[float, float]]:
    """`best` of each, the runs taken in turn (a, b, c, a, b, c, ...): a shared machine's
    speed drifts over seconds, and measuring each kind in a block of its own let one kind
    catch a fast spell the others missed (decode-alone swung 120-230 MP/s between blocks)."""
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, fn in runs.items():
            results[name].append(best(fn, 1, device))
    return {name: min(r) for name, r in results.items()}


def decode_alone(image: Path, threads: int) -> None:
    import tifffile

    with tifffile.TiffFile(image) as tif:
        tif.series[0].levels[0].asarray(maxworkers=threads)


def tiles_read(image: Path, threads: int, batch_size: int, config: Any) -> None:
    from midog.detector.feed import prefetch_batches
    from midog.detector.tiles import tile_origins
    from midog.slides.readers import open_slide

    with open_slide(image, readers=threads) as slide:
        origins = sorted(tile_origins(slide.width, slide.height, config), key=lambda xy: (xy[1], xy[0]))
        for _ in prefetch_batches(slide, origins, batch_size, config, threads, False):
            pass


def stage_times(detector: Any, image: Path, device: str) -> dict[str, float]:
    """Seconds per stage of one pipeline run, each stage timed where it runs (reader and
    post-processing threads overlap the loop: their sums can exceed the wall time). On
    CUDA every timed call synchronises, so this run is slower than the MP/s runs."""
    import midog.detector.tiles as tiles_mod
    import midog.network.postprocess as post_mod

    times: dict[str, float] = {}

    def timed(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            sync(device)
            start = time.perf_counter()
            result = fn(*args, **kwargs)
            sync(device)
            times[name] = times.get(name, 0.0) + time.perf_counter() - start
            return result

        return wrapper

    from midog.slides.readers import TiffSlide

    class TimedNormalizer:
        """The detector's Normalizer, timed both where the device runs it and where the
        CPU device's reader threads run it (`into`)."""

        def __init__(self, inner: Any) -> None:
            self.inner = inner
            self.call = timed("normalise (on the device)", inner)
            self.into = timed("normalise (reader threads, CPU device)", inner.into)

        def __call__(self, tiles: Any) -> Any:
            return self.call(tiles)

    saved = (tiles_mod.read_tile, post_mod.distance_nms, detector.normalize, detector.model, detector._batch_results, TiffSlide.prepare)
    TiffSlide.prepare = timed("decode (reader threads)", saved[5])
    tiles_mod.read_tile = timed("staging: tiles cut into the batch (reader threads)", saved[0])
    post_mod.distance_nms = timed("distance NMS", saved[1])
    detector.normalize = TimedNormalizer(saved[2])
    detector.model = detector.eager = timed("network (stand-in)", saved[3])
    detector._batch_results = timed("post-processing (batched, threads)", saved[4])
    try:
        start = time.perf_counter()
        detections = detector.detect(image, tissue_only=False)
        wall = time.perf_counter() - start
        start = time.perf_counter()
        from midog.atomic import write_json_atomic
        from midog.results.challenge import multiple_points

        with tempfile.TemporaryDirectory() as tmp:
            write_json_atomic(Path(tmp) / "mitotic-figures.json", multiple_points(detections, "2022"))
        times["writing the JSON"] = time.perf_counter() - start
    finally:
        tiles_mod.read_tile, post_mod.distance_nms, detector.normalize = saved[:3]
        detector.model = detector.eager = saved[3]
        detector._batch_results = saved[4]
        TiffSlide.prepare = saved[5]
    if device.startswith("cuda"):
        times["copy to device (estimate: one batch's copy x batches)"] = copy_estimate(detector, detections.info["tiles"])
    times["wall (whole detect)"] = wall
    return times


def copy_estimate(detector: Any, tiles: int) -> float:
    import torch

    host = torch.empty((detector.batch_size, 512, 512, 3), dtype=torch.uint8).pin_memory()
    seconds = best(lambda: host.to(detector.device, non_blocking=True), 5, "cuda")[0]
    return seconds * tiles / detector.batch_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu, or cuda: the stand-in network and post-processing run there")
    parser.add_argument("--cpus", type=int, default=None, help="restrict to this many CPUs (4: the platform's T4 instance)")
    parser.add_argument("--threads", default=None, help="reader-thread counts, comma-separated (default: 1, 2, 4, 8, 16 up to the cores)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per figure, taken in turn with the other figures' runs; the fastest counts")
    parser.add_argument("--skip-jpeg", action="store_true", help="only the strip TIFF region")
    args = parser.parse_args()
    import torch

    note = restrict_cpus(args.cpus) if args.cpus else ""
    cores = usable_cores()
    prepare(slide=False)
    if not args.skip_jpeg:
        make_jpeg_slide()
    threads = [int(t) for t in args.threads.split(",")] if args.threads else [t for t in (1, 2, 4, 8, 16) if t <= cores]
    if cores not in threads:
        threads.append(cores)
    card = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else "no GPU"
    print(f"host benchmark: {cpu_name()}; {cores} usable cores {note}; device {args.device} ({card}); "
          f"torch {torch.__version__}, {torch.get_num_threads()} torch threads")
    images = {"strip TIFF": REGION} if args.skip_jpeg else {"strip TIFF": REGION, "JPEG tiles": JPEG_SLIDE}
    headline: dict[str, dict[str, float]] = {}
    cpu_headline: dict[str, dict[str, float]] = {}
    for name, image in images.items():
        import tifffile

        with tifffile.TiffFile(image) as tif:
            height, width = tif.series[0].levels[0].shape[:2]
        mp = width * height / 1e6
        print(f"\n{name} {width} x {height} ({image.name}); MP/s of the image's area")
        print("threads  decode-alone  tiles-read  pipeline  pipeline/decode  pipeline/tiles  CPU seconds: decode tiles pipeline")
        for t in threads:
            detector = make_detector(args.device, t)
            detector.detect(image, tissue_only=False)  # warm-up: first-touch allocations, CUDA kernels
            timings = interleaved({
                "decode": lambda: decode_alone(image, t),
                "tiles": lambda: tiles_read(image, t, detector.batch_size, detector.config),
                "pipeline": lambda: detector.detect(image, tissue_only=False),
            }, args.repeats, args.device)
            rates = {k: mp / wall for k, (wall, _) in timings.items()}
            cpu = {k: used for k, (_, used) in timings.items()}
            if t == cores:
                headline[name] = rates
                cpu_headline[name] = cpu
            print(f"{t:7d}  {rates['decode']:12.0f}  {rates['tiles']:10.0f}  {rates['pipeline']:8.0f}  "
                  f"{rates['pipeline'] / rates['decode']:15.2f}  {rates['pipeline'] / rates['tiles']:14.2f}  "
                  f"{cpu['decode']:6.2f} {cpu['tiles']:6.2f} {cpu['pipeline']:6.2f}", flush=True)
        detector = make_detector(args.device, cores)
        print(f"stages of one pipeline run, {cores} reader threads, batch {detector.batch_size} (seconds):")
        for stage, seconds in stage_times(detector, image, args.device).items():
            print(f"  {stage:55s} {seconds:7.3f}")
    if "JPEG tiles" in headline:
        j = headline["JPEG tiles"]
        print(f"JPEG tiles at {cores} threads: pipeline/decode={j['pipeline'] / j['decode']:.3f} pipeline/tiles={j['pipeline'] / j['tiles']:.3f}")
    c = cpu_headline["strip TIFF"]
    # CPU seconds are what a busy machine distorts least: their ratio is the wall ratio
    # that a machine with its cores free for this process would reach at best.
    print(f"strip TIFF CPU work: decode-alone/pipeline={c['decode'] / c['pipeline']:.3f} tiles-read/pipeline={c['tiles'] / c['pipeline']:.3f}")
    s = headline["strip TIFF"]
    print(f"host_vs_decode={s['pipeline'] / s['decode']:.3f} host_vs_tiles={s['pipeline'] / s['tiles']:.3f}")


if __name__ == "__main__":
    main()
