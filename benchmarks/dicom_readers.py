"""Region reads on a JPEG-tiled DICOM series: OpenSlide 4 against wsidicom, with the TIFF the
series was made from (tiffslide) as the baseline. Prints reads per second and whether the
pixels agree. Usage: python benchmarks/dicom_readers.py SLIDE.tiff SERIES_DIR [N]."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np


def main(tiff: str, series: str, n: int = 200) -> None:
    import openslide
    import tiffslide
    from wsidicom import WsiDicom

    first = sorted(Path(series).glob("*.dcm"))[0]
    osl, wsi, tsl = openslide.OpenSlide(str(first)), WsiDicom.open(series), tiffslide.TiffSlide(tiff)
    width, height = osl.dimensions
    rng = np.random.default_rng(0)
    spots = [(int(rng.integers(0, width - 512)), int(rng.integers(0, height - 512))) for _ in range(n)]
    readers = {
        "tiffslide (TIFF)": lambda x, y: np.asarray(tsl.read_region((x, y), 0, (512, 512), as_array=True)),
        "openslide (DICOM)": lambda x, y: np.asarray(osl.read_region((x, y), 0, (512, 512)))[:, :, :3],
        "wsidicom (DICOM)": lambda x, y: np.asarray(wsi.read_region((x, y), 0, (512, 512)).convert("RGB")),
    }
    first_pixels = {}
    for name, read in readers.items():
        read(*spots[0])  # warm: open files, build frame indexes
        start = time.perf_counter()
        out = [read(x, y) for x, y in spots]
        seconds = time.perf_counter() - start
        first_pixels[name] = out
        print(f"{name:18s} {n / seconds:7.1f} regions/s ({seconds / n * 1000:.1f} ms per 512x512 region)")
    base = first_pixels["tiffslide (TIFF)"]
    for name, out in first_pixels.items():
        diff = max(int(np.abs(a.astype(int) - b.astype(int)).max()) for a, b in zip(base, out))
        print(f"{name:18s} max |difference| from the TIFF's pixels: {diff}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 200)
