"""Each stored strip or tile of a TIFF decoded once, however many network tiles overlap it.

The network's 512 px tiles step by 460 px, so neighbouring tiles share pixels, and a stored
chunk (a strip, or a 512 px JPEG tile of a slide) lies under up to four of them. Reading
region by region through tiffslide decodes it again for each. `ChunkCache` decodes units
of stored chunks itself (tifffile's own decoder, the same codecs, so the same pixels),
converts them to RGB once and keeps them in a small least-recently-used cache:

- strips are grouped into full-width blocks of about `BLOCK_ROWS` rows, aligned to strip
  boundaries, so a 512-row tile is cut from a few blocks and every strip is decoded once
  (a strip TIFF's strips are often 1-16 rows: a unit per strip would cost more in Python
  than in decoding);
- tiles are units of their own.

Reader threads reading the same row of network tiles need the same units: `warm` lets each
decode the units no other thread is decoding yet, so they share the row's decoding rather
than queue behind one another for it.

Bytes come from the file with `os.pread`, which needs no shared file position, so reader
threads decode different units at the same time (the codecs release the GIL).
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..errors import ImageError

# Rows of a strip block: a quarter of a network tile, small enough for the reader threads
# on one row of tiles to share its decoding, large enough that Python's cost per block is
# small beside decoding it.
BLOCK_ROWS = 128
BAND_ROWS = 512  # a row of network tiles: what each reader thread works on at once
# The cache holds what the reader threads work on plus the rows that neighbouring tiles
# share; bounded in bytes whatever the slide's width (a 50 000 px wide band is 77 MB).
MAX_CACHE_MB = 512
WHITE = 255  # what missing (sparse) chunks read as: glass, i.e. background


def supported(page: Any, series: Any) -> bool:
    """Whether `ChunkCache` reads this level-0 page: one page, 2-D, samples interleaved,
    a complete chunk table. Anything else keeps the general reader."""
    try:
        if page.imagedepth != 1 or (page.planarconfig != 1 and page.samplesperpixel > 1):
            return False
        if len(series.levels[0].pages) != 1 or page.dtype is None:
            return False
        rows, cols = _grid(page)
        return len(page.dataoffsets) == rows * cols == len(page.databytecounts)
    except Exception:  # odd headers: leave them to the general reader and its errors
        return False


def strip_decoder(page: Any) -> Callable[[bytes, np.ndarray], bool] | None:
    """For the MIDOG files' own layout (8-bit RGB strips, deflate, no predictor or horizontal
    differencing), a decoder that writes a strip straight into its rows of a block: libdeflate
    into the block's memory, then the differencing undone in place, the codecs tifffile uses
    for such strips, so the same pixels. tifffile's general path allocates each strip and
    the block copies it: 0.31 against 0.26 CPU s for a 7215 x 5412 region (measured).
    The decoder returns False when a strip does not fill its rows exactly (damaged data):
    that strip then takes the general path and its errors. None for any other layout."""
    try:
        import imagecodecs

        if page.is_tiled or page.compression not in (8, 32946) or page.predictor not in (1, 2):
            return None
        if page.photometric != 2 or page.samplesperpixel != 3 or page.bitspersample != 8 or page.fillorder != 1:
            return None
        if np.dtype(page.dtype) != np.uint8 or page.planarconfig != 1 or page.extrasamples:
            return None
    except Exception:  # odd headers: the general path
        return None
    differenced = page.predictor == 2

    def decode_into(data: bytes, rows: np.ndarray) -> bool:
        flat = rows.reshape(-1)
        try:
            if len(imagecodecs.deflate_decode(data, out=flat)) != flat.size:
                return False
        except Exception:  # damaged stream: the general path names the file
            return False
        if differenced:
            imagecodecs.delta_decode(rows, axis=-2, out=rows)
        return True

    return decode_into


def _grid(page: Any) -> tuple[int, int]:
    if page.is_tiled:
        return -(-page.imagelength // page.tilelength), -(-page.imagewidth // page.tilewidth)
    return -(-page.imagelength // (page.rowsperstrip or page.imagelength)), 1


class _Unit:
    """One decoded unit, filled by the first thread that needs it."""

    __slots__ = ("lock", "pixels")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.pixels: np.ndarray | None = None


class ChunkCache:
    """RGB pixels of any region of a page, from stored chunks each decoded once while cached."""

    def __init__(self, path: Path, page: Any, convert: Callable[[np.ndarray], np.ndarray], readers: int = 1) -> None:
        self.path = path
        self.width, self.height = int(page.imagewidth), int(page.imagelength)
        self._offsets = np.asarray(page.dataoffsets, np.int64)
        self._counts = np.asarray(page.databytecounts, np.int64)
        self._decode = page.decode
        self._tables = {"jpegtables": page.jpegtables, "jpegheader": page.jpegheader} if page.compression in (6, 7) else {}
        self._convert = convert
        self._strip_into = strip_decoder(page)
        rows, self._cols = _grid(page)
        if page.is_tiled:
            self.chunk = (int(page.tilelength), int(page.tilewidth))
            self.per_unit = 1  # chunks per unit, along y
        else:
            strip = int(page.rowsperstrip or page.imagelength)
            self.chunk = (strip, self.width)
            self.per_unit = max(1, BLOCK_ROWS // strip)
        self.unit = (self.chunk[0] * self.per_unit, self.chunk[1])
        self._unit_rows = -(-rows // self.per_unit)
        unit_bytes = self.unit[0] * self.unit[1] * 3
        band_bytes = max(BAND_ROWS, self.unit[0]) * self.width * 3
        budget = min(MAX_CACHE_MB * 2**20, (readers + 2) * 2 * band_bytes)
        self.capacity = max(4, int(budget // unit_bytes))
        self._units: OrderedDict[tuple[int, int], _Unit] = OrderedDict()
        self._lock = threading.Lock()
        self._fd = os.open(path, os.O_RDONLY)
        self.decoded = 0  # units decoded so far: the benchmark checks each is decoded once

    def read(self, x: int, y: int, w: int, h: int, out: np.ndarray | None = None) -> np.ndarray:
        """(h, w, 3) uint8 pixels of the region, into `out` when given."""
        if out is None:
            out = np.empty((h, w, 3), np.uint8)
        uh, uw = self.unit
        for ur in range(y // uh, (y + h - 1) // uh + 1):
            for uc in range(x // uw, (x + w - 1) // uw + 1):
                pixels = self._get(ur, uc)
                y0, x0 = ur * uh, uc * uw
                ys, ye = max(y, y0), min(y + h, y0 + pixels.shape[0])
                xs, xe = max(x, x0), min(x + w, x0 + pixels.shape[1])
                out[ys - y : ye - y, xs - x : xe - x] = pixels[ys - y0 : ye - y0, xs - x0 : xe - x0]
        return out

    def _keys(self, x: int, y: int, w: int, h: int) -> list[tuple[int, int]]:
        uh, uw = self.unit
        return [(ur, uc) for ur in range(y // uh, (y + h - 1) // uh + 1) for uc in range(x // uw, (x + w - 1) // uw + 1)]

    def warm(self, regions: list[tuple[int, int, int, int]]) -> None:
        """Decode the units under the (x, y, w, h) `regions` that no other thread is decoding
        now; those that one is are left to it (`read` waits for them)."""
        for key in dict.fromkeys(k for region in regions for k in self._keys(*region)):
            unit = self._entry(key)
            if unit.pixels is None and unit.lock.acquire(blocking=False):
                try:
                    if unit.pixels is None:
                        unit.pixels = self._decode_unit(*key)
                        self.decoded += 1
                finally:
                    unit.lock.release()

    def _entry(self, key: tuple[int, int]) -> _Unit:
        # The cache lock only finds the entry; decoding runs under the unit's own lock.
        with self._lock:
            unit = self._units.get(key)
            if unit is None:
                unit = self._units[key] = _Unit()
                while len(self._units) > self.capacity:
                    self._units.popitem(last=False)
            else:
                self._units.move_to_end(key)
            return unit

    def _get(self, ur: int, uc: int) -> np.ndarray:
        unit = self._entry((ur, uc))
        with unit.lock:
            if unit.pixels is None:
                unit.pixels = self._decode_unit(ur, uc)
                self.decoded += 1
            return unit.pixels

    def _decode_unit(self, ur: int, uc: int) -> np.ndarray:
        ch, cw = self.chunk
        first = ur * self.per_unit
        last = min(first + self.per_unit, -(-self.height // ch))
        h = min(last * ch, self.height) - first * ch
        w = min(cw, self.width - uc * cw)
        if self._strip_into is not None:
            return self._decode_strips(first, last, h)
        pixels = None
        for r in range(first, last):
            index = r * self._cols + uc
            rgb = self._chunk_rgb(index, min(ch, self.height - r * ch), w)
            if pixels is None:
                if last - first == 1:
                    return rgb
                pixels = np.empty((h, w, 3), np.uint8)
            pixels[(r - first) * ch : (r - first) * ch + rgb.shape[0]] = rgb
        assert pixels is not None
        return pixels

    def _decode_strips(self, first: int, last: int, h: int) -> np.ndarray:
        """A block of strips, each decoded into its own rows (`strip_decoder`)."""
        ch = self.chunk[0]
        pixels = np.empty((h, self.width, 3), np.uint8)
        for r in range(first, last):
            top, rows = (r - first) * ch, min(ch, self.height - r * ch)
            count = int(self._counts[r])
            target = pixels[top : top + rows]
            if count and self._strip_into(os.pread(self._fd, count, int(self._offsets[r])), target):  # type: ignore[misc]
                continue
            target[...] = self._chunk_rgb(r, rows, self.width)
        return pixels

    def _chunk_rgb(self, index: int, h: int, w: int) -> np.ndarray:
        count = int(self._counts[index])
        if count == 0:  # the file stores no pixels here: glass
            return np.full((h, w, 3), WHITE, np.uint8)
        try:
            data = os.pread(self._fd, count, int(self._offsets[index]))
            samples, _, _ = self._decode(data, index, **self._tables)
            samples = samples.reshape(samples.shape[-3:])[:h, :w]
        except ImageError:
            raise
        except Exception as exc:  # codecs raise their own types for damaged data
            raise ImageError(self.path, f"damaged or truncated image ({type(exc).__name__}: {exc})") from None
        return self._convert(samples)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

