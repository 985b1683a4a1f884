"""The `Slide` interface every reader answers (regions, thumbnail, spacing, blank chunks),
and `ArraySlide`, an image held whole in memory (SimpleITK formats and small images)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .spacing import FileSpacing

__all__ = ["ArraySlide", "Slide"]


class Slide:
    """An RGB image of `width` x `height` pixels with `spacing_mm` (x, y) per pixel.

    A reader reports what its file says of the spacing (`file_spacing`); `open_slide`
    decides `spacing_mm` from that and any override, in one place."""

    path: Path
    width: int
    height: int
    spacing_mm: tuple[float, float]

    def file_spacing(self) -> FileSpacing:
        """What the file says of its pixel spacing, unchecked; read only when needed."""
        raise NotImplementedError

    def read_region(self, x: int, y: int, w: int, h: int) -> np.ndarray:
        """Pixels [y:y+h, x:x+w] as (h, w, 3) uint8; the region must lie inside the image."""
        raise NotImplementedError

    def prepare(self, regions: list[tuple[int, int, int, int]]) -> None:
        """A hint that the (x, y, w, h) `regions` are read next; readers that cache decoded
        chunks decode what no other thread is decoding yet."""

    def read_into(self, out: np.ndarray, x: int, y: int) -> np.ndarray:
        """`read_region` of out's size at (x, y), written into `out` (a staging buffer) and
        returned; readers that assemble regions themselves skip the intermediate copy."""
        out[:] = self.read_region(x, y, out.shape[1], out.shape[0])
        return out

    def thumbnail(self, max_side: int = 2048) -> tuple[np.ndarray, float]:
        """A low-resolution RGB view and its downsample factor, for tissue detection."""
        raise NotImplementedError

    def is_blank(self, x: int, y: int, w: int, h: int) -> bool:
        """True when the file stores no pixels for this region (sparse TIFF tiles)."""
        return False

    # Pyramidal / vendor slides: tissue detection pays off and is on by default.
    is_whole_slide: bool = False

    @property
    def level_downsamples(self) -> tuple[float, ...]:
        """The downsample of each stored resolution level, level 0 (1.0) first."""
        return (1.0,)

    def read_level(self, level: int, x: int, y: int, w: int, h: int) -> np.ndarray:
        """(h, w, 3) uint8 pixels of `level`, from level-0 origin (x, y); w, h in that
        level's pixels. The review page's tile pyramid reads its coarse tiles this way
        rather than decoding level 0 for them."""
        if level != 0:
            raise ValueError(f"{self.path}: no resolution level {level}")
        return self.read_region(x, y, w, h)

    @property
    def offset_px(self) -> tuple[int, int]:
        """Level-0 origin of the region the file says holds the scan (MRXS, SCN: OpenSlide's
        bounds); viewers that crop to it (QuPath) count their coordinates from there."""
        return (0, 0)

    def close(self) -> None:
        pass

    def __enter__(self) -> "Slide":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ArraySlide(Slide):
    """An image held whole in memory (SimpleITK formats and small images)."""

    def __init__(self, path: Path, pixels: np.ndarray, said: FileSpacing) -> None:
        self.path = path
        self.pixels = pixels
        self.height, self.width = pixels.shape[:2]
        self._said = said

    def file_spacing(self) -> FileSpacing:
        return self._said

    def read_region(self, x: int, y: int, w: int, h: int) -> np.ndarray:
        return self.pixels[y : y + h, x : x + w]

    def thumbnail(self, max_side: int = 2048) -> tuple[np.ndarray, float]:
        step = max(1, int(np.ceil(max(self.width, self.height) / max_side)))
        return self.pixels[::step, ::step], float(step)
