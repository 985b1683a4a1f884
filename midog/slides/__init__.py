"""The ground floor: images read region by region in physical units. `open_slide` picks
the reader for any format (TIFF of any layout, vendor whole-slide formats, ITK formats);
beside it pixel types, spacing, cost limits, TIFF structure checks and the tissue mask."""

from __future__ import annotations

from .readers import TiffSlide, check_file, open_slide
from .slide import ArraySlide, Slide
from .wsi import OPENSLIDE_SUFFIXES, OpenSlideSlide
from .limits import DEFAULT_LIMITS, Limits

__all__ = ["ArraySlide", "DEFAULT_LIMITS", "Limits", "OPENSLIDE_SUFFIXES", "OpenSlideSlide", "Slide", "TiffSlide", "check_file", "open_slide"]
