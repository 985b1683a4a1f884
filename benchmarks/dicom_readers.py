"""Region reads on a JPEG-tiled DICOM series: OpenSlide 4 against wsidicom, with the TIFF the
series was made from (tiffslide) as the baseline. The readers take turns in rounds, so a
busy machine slows them alike; CPU time is reported beside wall time. Then the same reads
from 4 threads at once (the detector's reading threads). Prints whether the pixels agree.
Usage: python benchmarks/dicom_readers.py SLIDE.tiff SERIES_DIR [N]."""

from __future__ import annotations

import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

SIDE = 512
ROUNDS = 5


CACHE_BYTES = 100 * 2**20  # wsidicom's default decoded-frame cache


def main(tiff: str, series: str, n: int = 200, equal_cache: bool = True) -> None:
    import openslide
    import tiffslide
    from wsidicom import WsiDicom

    first = sorted(Path(series).glob("*.dcm"))[0]
    osl, wsi, tsl = openslide.OpenSlide(str(first)), WsiDicom.open(series), tiffslide.TiffSlide(tiff)
    if equal_cache:
        osl.set_cache(openslide.OpenSlideCache(CACHE_BYTES))
    width, height = osl.dimensions
    rng = np.random.default_rng(0)
    spots = [(int(rng.integers(0, width - SIDE)), int(rng.integers(0, height - SIDE))) for _ in range(n)]
    readers = {
        "tiffslide (TIFF)": lambda xy: np.asarray(tsl.read_region(xy, 0, (SIDE, SIDE), as_array=True)),
        "openslide (DICOM)": lambda xy: np.asarray(osl.read_region(xy, 0, (SIDE, SIDE)))[:, :, :3],
        "wsidicom (DICOM)": lambda xy: np.asarray(wsi.read_region(xy, 0, (SIDE, SIDE)).convert("RGB")),
    }
    wall = dict.fromkeys(readers, 0.0)
    cpu = dict.fromkeys(readers, 0.0)
    pixels: dict[str, list[np.ndarray]] = {name: [] for name in readers}
    for read in readers.values():
        read(spots[0])  # warm: open files, build frame indexes
    for r in range(ROUNDS):
        part = spots[r::ROUNDS]
        for name, read in readers.items():
            w0, c0 = time.perf_counter(), time.process_time()
            pixels[name] += [read(xy) for xy in part]
            wall[name] += time.perf_counter() - w0
            cpu[name] += time.process_time() - c0
    for name in readers:
        print(f"{name:18s} one thread: {wall[name] / n * 1000:5.1f} ms wall, {cpu[name] / n * 1000:5.1f} ms CPU per {SIDE}x{SIDE} region")
    for name, read in readers.items():
        with ThreadPoolExecutor(4) as pool:
            w0 = time.perf_counter()
            list(pool.map(read, spots))
            print(f"{name:18s} 4 threads: {n / (time.perf_counter() - w0):6.1f} regions/s")
    base = pixels["tiffslide (TIFF)"]
    for name, out in pixels.items():
        diff = [np.abs(a.astype(int) - b.astype(int)) for a, b in zip(base, out)]
        print(f"{name:18s} |difference| from the TIFF's pixels: max {max(int(d.max()) for d in diff)}, mean {np.mean([d.mean() for d in diff]):.2f}")
    pairs = zip(pixels["openslide (DICOM)"], pixels["wsidicom (DICOM)"])
    print(f"openslide vs wsidicom: max |difference| {max(int(np.abs(a.astype(int) - b.astype(int)).max()) for a, b in pairs)}")


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    main(args[0], args[1], int(args[2]) if len(args) > 2 else 200, "--openslide-default-cache" not in sys.argv)
