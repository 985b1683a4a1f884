"""The pictures of a review page: a tile pyramid of the slide, crops of the candidates and a
thumbnail for the cohort index.

The pyramid is the usual one of web viewers: level 0 holds the whole image in one tile, each
next level doubles the resolution, the last is level-0 pixels of the slide. Every tile is read
from the slide's own resolution level closest above it (a coarse tile never decodes level 0
when the slide stores a pyramid), then resampled to the tile's size. On whole slides, tiles
far from tissue are not written at the fine levels (most of a slide is glass, and a viewer
shows the coarse level there); the page is told which tiles exist, so it never asks for a
missing file.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..atomic import write_bytes_atomic

if TYPE_CHECKING:
    from ..slides.slide import Slide

TILE_PX = 256
FORMATS = {"jpeg": ".jpg", "png": ".png"}
JPEG_QUALITY = 85  # tiles: no visible blocking on H&E, a third of PNG's size
ALL_TILES_UP_TO = 64  # levels with at most this many tiles are written whole, tissue or not
CROP_PX = 128  # gallery crops on the page
CROP_MM = 0.032  # what a crop shows: a mitotic figure (~10 um) with its neighbourhood


@dataclass(frozen=True)
class Level:
    """One level of the page's pyramid: `downsample` level-0 px per tile pixel."""

    downsample: int
    width: int
    height: int
    cols: int
    rows: int

    def tile_size(self, col: int, row: int, tile: int = TILE_PX) -> tuple[int, int]:
        return min(tile, self.width - col * tile), min(tile, self.height - row * tile)


def pyramid_levels(width: int, height: int, tile: int = TILE_PX) -> list[Level]:
    """Coarsest (one tile) first, level-0 pixels last."""
    top = max(0, math.ceil(math.log2(max(width, height) / tile)))
    levels = []
    for k in range(top + 1):
        ds = 2 ** (top - k)
        w, h = math.ceil(width / ds), math.ceil(height / ds)
        levels.append(Level(ds, w, h, math.ceil(w / tile), math.ceil(h / tile)))
    return levels


def tiles_to_write(levels: list[Level], keep: np.ndarray | None, keep_downsample: float, tile: int = TILE_PX) -> list[np.ndarray]:
    """Per level, a (rows, cols) bool array of the tiles to write: all of them where `keep`
    (a tissue mask of cells of `keep_downsample` level-0 px) is None or the level is small,
    else those that touch it."""
    out = []
    for level in levels:
        wanted = np.ones((level.rows, level.cols), bool)
        if keep is not None and level.rows * level.cols > ALL_TILES_UP_TO:
            # A summed-area table answers "any tissue under this tile" in O(1) per tile.
            sat = np.pad(keep.astype(np.int32).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
            h, w = keep.shape
            span = tile * level.downsample / keep_downsample  # mask cells per tile
            r0 = np.minimum((np.arange(level.rows) * span).astype(int), h)
            r1 = np.minimum(np.ceil((np.arange(level.rows) + 1) * span).astype(int), h)
            c0 = np.minimum((np.arange(level.cols) * span).astype(int), w)
            c1 = np.minimum(np.ceil((np.arange(level.cols) + 1) * span).astype(int), w)
            wanted = (sat[r1][:, c1] - sat[r0][:, c1] - sat[r1][:, c0] + sat[r0][:, c0]) > 0
        out.append(wanted)
    return out


def read_tile(slide: "Slide", level: Level, col: int, row: int, tile: int = TILE_PX) -> np.ndarray:
    """The tile's pixels, from the slide level closest above it in resolution."""
    tw, th = level.tile_size(col, row, tile)
    ds = level.downsample
    x0, y0 = col * tile * ds, row * tile * ds
    w0, h0 = min(slide.width - x0, tw * ds), min(slide.height - y0, th * ds)
    downsamples = slide.level_downsamples
    source = max(i for i, d in enumerate(downsamples) if d <= ds * (1 + 1e-6))
    d = downsamples[source]
    # floor: never past the level's last pixel, whichever way the format rounds its size.
    wl, hl = max(1, math.floor(w0 / d)), max(1, math.floor(h0 / d))
    pixels = slide.read_level(source, x0, y0, wl, hl)
    return resize(pixels, tw, th)


def resize(pixels: np.ndarray, width: int, height: int) -> np.ndarray:
    from PIL import Image

    if pixels.shape[1] == width and pixels.shape[0] == height:
        return np.ascontiguousarray(pixels)
    # Box filtering averages every source pixel: right for large reductions, where Lanczos
    # over a few taps would alias the nuclei's texture.
    image = Image.fromarray(np.ascontiguousarray(pixels)).resize((width, height), Image.Resampling.BOX)
    return np.asarray(image)


def encode(pixels: np.ndarray, fmt: str) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    image = Image.fromarray(np.ascontiguousarray(pixels))
    if fmt == "jpeg":
        image.save(buffer, format="JPEG", quality=JPEG_QUALITY)
    elif fmt == "png":
        image.save(buffer, format="PNG", optimize=False)
    else:
        raise ValueError(f"tile format must be one of {tuple(FORMATS)}, not {fmt!r}")
    return buffer.getvalue()


def write_pyramid(slide: "Slide", folder: Path, levels: list[Level], wanted: list[np.ndarray], fmt: str, progress: bool = True) -> int:
    """Write tiles `folder`/<level>/<col>_<row>.<ext>; returns how many were written."""
    from tqdm import tqdm

    total = int(sum(w.sum() for w in wanted))
    ext = FORMATS[fmt]
    with tqdm(total=total, desc=f"{slide.path.name} tiles", unit="tile", disable=not progress, leave=False) as bar:
        for k, (level, want) in enumerate(zip(levels, wanted)):
            for row, col in zip(*np.nonzero(want)):
                pixels = read_tile(slide, level, int(col), int(row))
                write_bytes_atomic(folder / str(k) / f"{col}_{row}{ext}", encode(pixels, fmt))
                bar.update()
    return total


def crop_side_px(spacing_mm: tuple[float, float]) -> tuple[int, int]:
    """Level-0 px (x, y) a crop covers: CROP_MM, within sensible bounds."""
    return tuple(int(np.clip(round(CROP_MM / s), 32, 1024)) for s in spacing_mm)  # type: ignore[return-value]


def read_crop(slide: "Slide", x: float, y: float, side: tuple[int, int]) -> np.ndarray:
    """CROP_PX square picture centred on (x, y) level-0 px; white where it passes the edge."""
    sw, sh = side
    x0, y0 = int(round(x)) - sw // 2, int(round(y)) - sh // 2
    canvas = np.full((sh, sw, 3), 255, np.uint8)
    ax0, ay0 = max(0, x0), max(0, y0)
    ax1, ay1 = min(slide.width, x0 + sw), min(slide.height, y0 + sh)
    if ax1 > ax0 and ay1 > ay0:
        canvas[ay0 - y0 : ay1 - y0, ax0 - x0 : ax1 - x0] = slide.read_region(ax0, ay0, ax1 - ax0, ay1 - ay0)
    return resize(canvas, CROP_PX, CROP_PX)


def write_crops(slide: "Slide", folder: Path, xy_px: np.ndarray, side: tuple[int, int], progress: bool = True) -> list[str]:
    """One JPEG per point, `folder`/<i>.jpg in the order given; returns the names."""
    from tqdm import tqdm

    names = []
    for i, (x, y) in enumerate(tqdm(xy_px, desc=f"{slide.path.name} crops", unit="crop", disable=not progress, leave=False)):
        name = f"{i}.jpg"
        write_bytes_atomic(folder / name, encode(read_crop(slide, float(x), float(y), side), "jpeg"))
        names.append(name)
    return names


def thumbnail_jpeg(thumbnail: np.ndarray, max_side: int = 256) -> bytes:
    h, w = thumbnail.shape[:2]
    scale = min(1.0, max_side / max(h, w))
    return encode(resize(thumbnail, max(1, round(w * scale)), max(1, round(h * scale))), "jpeg")
