"""Vendor whole-slide formats (SVS, NDPI, MRXS, SCN, ...) through openslide: regions are
decoded on demand, never the whole level; spacing comes from the slide's MPP properties."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import ImageError
from .limits import DEFAULT_LIMITS, Limits
from .slide import Slide
from .spacing import FileSpacing, mpp_property_mm

__all__ = ["OPENSLIDE_SUFFIXES", "OpenSlideSlide", "is_vendor_wsi"]

OPENSLIDE_SUFFIXES = {".svs", ".ndpi", ".mrxs", ".scn", ".vms", ".vmu", ".bif", ".svslide"}


class OpenSlideSlide(Slide):
    """Whole-slide formats: regions are decoded on demand, never the whole level."""

    is_whole_slide = True

    def __init__(self, path: Path, limits: Limits = DEFAULT_LIMITS) -> None:
        import openslide

        try:
            self._slide = openslide.OpenSlide(str(path))
        except openslide.OpenSlideError as exc:
            raise ImageError(path, f"cannot open whole-slide image ({exc})") from None
        self.path = path
        self.width, self.height = self._slide.dimensions
        limits.check_pixels(path, self.width, self.height)

    def file_spacing(self) -> FileSpacing:
        import openslide

        props = self._slide.properties
        raw = props.get(openslide.PROPERTY_NAME_MPP_X)
        if raw is None:
            return FileSpacing(None, missing="no pixel spacing (microns per pixel) in the slide")
        return FileSpacing(mpp_property_mm(self.path, raw, props.get(openslide.PROPERTY_NAME_MPP_Y)), "the slide's MPP property")

    def read_region(self, x: int, y: int, w: int, h: int) -> np.ndarray:
        region = np.asarray(self._slide.read_region((x, y), 0, (w, h)))
        return region[:, :, :3]

    def thumbnail(self, max_side: int = 2048) -> tuple[np.ndarray, float]:
        thumb = np.asarray(self._slide.get_thumbnail((max_side, max_side)).convert("RGB"))
        return thumb, self.width / thumb.shape[1]

    @property
    def offset_px(self) -> tuple[int, int]:
        import openslide

        props = self._slide.properties
        names = (openslide.PROPERTY_NAME_BOUNDS_X, openslide.PROPERTY_NAME_BOUNDS_Y,
                 openslide.PROPERTY_NAME_BOUNDS_WIDTH, openslide.PROPERTY_NAME_BOUNDS_HEIGHT)
        # QuPath (OpenslideImageServer) crops only when all four bounds are given.
        if not all(n in props for n in names):
            return (0, 0)
        try:
            return (int(props[names[0]]), int(props[names[1]]))
        except ValueError:  # a malformed bound is no reason to refuse the slide: no offset
            return (0, 0)

    @property
    def level_downsamples(self) -> tuple[float, ...]:
        return tuple(float(d) for d in self._slide.level_downsamples)

    def read_level(self, level: int, x: int, y: int, w: int, h: int) -> np.ndarray:
        return np.asarray(self._slide.read_region((x, y), level, (w, h)))[:, :, :3]

    def close(self) -> None:
        self._slide.close()


def is_vendor_wsi(path: Path) -> bool:
    import openslide

    try:
        fmt = openslide.OpenSlide.detect_format(str(path))
    except Exception:  # detect_format raises on some unreadable files; SimpleITK will report those
        return False
    return fmt is not None and fmt != "generic-tiff"
