"""A synthetic pyramidal whole-slide image, for the streaming tests and benchmarks."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..atomic import atomic_path
from .dataset import synth_image
from .scanners import SCANNERS


def make_slide(
    path: str | Path,
    width: int,
    height: int,
    *,
    seed: int = 0,
    n_regions: int = 4,
    region_size: int = 2048,
    tile: int = 512,
    levels: int = 4,
) -> list[tuple[int, int, int]]:
    """A pyramidal, tiled, JPEG-compressed slide: white glass with `n_regions` square
    patches of synthetic tissue (scanner A). Written tile by tile, so even a slide far
    bigger than memory is made in bounded memory. Levels are separate IFDs (downsample 4
    each), which both openslide and tiffslide read. Returns the regions as (x, y, size).
    """
    import tifffile

    rng = np.random.default_rng(seed)
    regions = []
    for k in range(n_regions):
        # Keep regions on a coarse grid, apart from each other and inside the slide.
        x = int(rng.integers(0, max(1, width - region_size)) // tile * tile)
        y = int(rng.integers(0, max(1, height - region_size)) // tile * tile)
        regions.append((x, y, region_size))
    patches = [synth_image(seed, 0, region_size, region_size, content_key=(k,))[0] for k in range(n_regions)]
    glass = np.array([242, 242, 240], np.uint8)
    profile = SCANNERS[0]

    def tiles(level: int):
        factor = 4**level
        lw, lh = -(-width // factor), -(-height // factor)
        scaled = [p[::factor, ::factor] for p in patches]
        for ty in range(0, lh, tile):
            for tx in range(0, lw, tile):
                out = np.empty((tile, tile, 3), np.uint8)
                out[:] = glass
                for (rx, ry, rs), patch in zip(regions, scaled):
                    rx, ry = rx // factor, ry // factor
                    x0, y0 = max(tx, rx), max(ty, ry)
                    x1, y1 = min(tx + tile, rx + patch.shape[1]), min(ty + tile, ry + patch.shape[0])
                    if x0 < x1 and y0 < y1:
                        out[y0 - ty : y1 - ty, x0 - tx : x1 - tx] = patch[y0 - ry : y1 - ry, x0 - rx : x1 - rx]
                yield out

    mpp_res = profile.resolution
    with atomic_path(path) as tmp, tifffile.TiffWriter(tmp, bigtiff=True) as tif:
        for level in range(levels):
            factor = 4**level
            lw, lh = -(-width // factor), -(-height // factor)
            tif.write(
                tiles(level),
                shape=(lh, lw, 3),
                dtype=np.uint8,
                tile=(tile, tile),
                photometric="rgb",
                compression="jpeg",
                compressionargs={"level": 90},
                resolution=(mpp_res / factor, mpp_res / factor),
                resolutionunit=profile.resolution_unit,
                subfiletype=1 if level else 0,
                metadata=None,
            )
    return regions
