"""Cheap tissue detection on a low-resolution view, to skip background tiles of a slide.

Glass is bright and grey; stained tissue is coloured. A pixel is tissue when its
saturation (max - min over RGB) exceeds a threshold and it is not near-white; the mask is
dilated so that tiles touching tissue edges are kept.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

MIN_SATURATION = 20  # of 255: clearly above scanner noise on glass
MAX_BRIGHTNESS = 235  # near-white is glass even when slightly tinted


def tissue_mask(thumbnail: np.ndarray, dilate_px: int = 2) -> np.ndarray:
    rgb = thumbnail.astype(np.int16)
    saturation = rgb.max(2) - rgb.min(2)
    mask = (saturation > MIN_SATURATION) & (rgb.mean(2) < MAX_BRIGHTNESS)
    mask = ndimage.binary_opening(mask, iterations=1)  # drop isolated dust pixels
    # iterations=0 would make scipy dilate until nothing changes: no dilation must mean none.
    return ndimage.binary_dilation(mask, iterations=dilate_px) if dilate_px > 0 else mask


def tiles_with_tissue(
    origins: list[tuple[int, int]], tile_size: int, mask: np.ndarray, downsample: float
) -> list[tuple[int, int]]:
    """The origins whose tile covers at least one tissue pixel of the mask."""
    # A summed-area table answers "any tissue in this rectangle" in O(1) per tile.
    sat = np.pad(mask.astype(np.int32).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    h, w = mask.shape
    kept = []
    for x, y in origins:
        x0, y0 = min(int(x / downsample), w - 1), min(int(y / downsample), h - 1)
        x1 = min(w, max(x0 + 1, int(np.ceil((x + tile_size) / downsample))))
        y1 = min(h, max(y0 + 1, int(np.ceil((y + tile_size) / downsample))))
        if sat[y1, x1] - sat[y0, x1] - sat[y1, x0] + sat[y0, x0] > 0:
            kept.append((x, y))
    return kept


def tiles_with_data(slide: "object", origins: list[tuple[int, int]], tile_size: int) -> list[tuple[int, int]]:
    """The origins whose tile the file stores at least partly: tiles made only of missing
    (sparse) TIFF tiles are background, skipped without decoding anything."""
    blank = getattr(slide, "is_blank", None)
    if blank is None:
        return origins
    width, height = slide.width, slide.height  # type: ignore[attr-defined]
    return [(x, y) for x, y in origins if not blank(x, y, min(tile_size, width - x), min(tile_size, height - y))]
