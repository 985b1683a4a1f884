"""The mitotic count: mitotic figures in tissue, per mm², the hotspot of a given area
holding the most of them, and the Nottingham mitotic score for that area.

Only points named "mitotic figure", or unnamed points (2021 files list only those), count;
a point counts when it lies in the tissue mask, and the hotspot's centre must lie there too.

The score follows Elston & Ellis (Histopathology 1991; 19: 403-410): with their microscope
(field diameter 0.59 mm, 10 fields = 2.74 mm²) score 1 is 0-9 mitoses, 2 is 10-19, 3 is 20
or more. The cut-offs are densities (10 / 2.74 and 20 / 2.74 per mm²); for another area A
a count scores 2 from ceil(10 A / 2.74) and 3 from ceil(20 A / 2.74), which is how the
published per-microscope tables are derived (2 mm²: 0-7, 8-14, 15+).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..detector.detections import Detections, Thumbnail
from .hotspot import Hotspot, TissueMap, find_hotspot, held_mask

log = logging.getLogger(__name__)

DEFAULT_AREA_MM2 = 2.0  # WHO / MIDOG convention: the most active 2 mm²
REFERENCE_AREA_MM2 = 2.74  # Elston & Ellis: 10 fields of 0.274 mm²
REFERENCE_CUTOFFS = (10, 20)  # counts in that area from which scores 2 and 3 start
SCORE_SOURCE = "Elston & Ellis 1991 (0-9 / 10-19 / 20+ in 2.74 mm²), scaled linearly to the area"
THUMBNAIL_SIDE = 4096  # the tissue mask: 0.5 um cells on a MIDOG region, ~8 um on a 100k px slide


@dataclass(frozen=True)
class CountOptions:
    area_mm2: float = DEFAULT_AREA_MM2
    shape: str = "circle"
    heatmap: bool = False  # in the overlay


def field_area_mm2(diameter_mm: float, fields: int) -> float:
    """The area a microscope counts in `fields` round fields of `diameter_mm`."""
    return fields * math.pi * (diameter_mm / 2) ** 2


def score_cutoffs(area_mm2: float) -> tuple[int, int]:
    """The counts in `area_mm2` from which the mitotic score is 2 and 3."""
    # Rounded before ceil so that 2.74 mm² gives exactly 10 and 20, not 11 by float noise.
    return tuple(math.ceil(round(c * area_mm2 / REFERENCE_AREA_MM2, 9)) for c in REFERENCE_CUTOFFS)  # type: ignore[return-value]


def mitotic_score(count: int, area_mm2: float) -> int:
    two, three = score_cutoffs(area_mm2)
    return 3 if count >= three else 2 if count >= two else 1


def tissue_map(thumbnail: Thumbnail, size_px: tuple[int, int], spacing_mm: tuple[float, float]) -> TissueMap:
    """The tissue mask of a thumbnail, placed on the image in mm. Undilated: it measures area."""
    from ..slides.tissue import tissue_mask  # scipy: loaded when counting, not for `midog --help`

    sx, sy = spacing_mm
    d = thumbnail.downsample
    return TissueMap(tissue_mask(thumbnail.pixels, dilate_px=0), (d * sx, d * sy), (size_px[0] * sx, size_px[1] * sy))


def area_in_tissue(tissue: TissueMap, spot: Hotspot) -> float:
    """How much of the hotspot region is tissue (cells whose centre it holds): when it is
    well below the region's area, the count and score describe a smaller sample."""
    rows, cols = np.nonzero(tissue.mask)
    w, h = tissue.cell_mm
    centres = np.stack([(cols + 0.5) * w, (rows + 0.5) * h], 1)
    inside = held_mask(centres, np.asarray(spot.center_mm), spot.shape, spot.area_mm2)
    widths = np.minimum((cols + 1) * w, tissue.extent_mm[0]) - cols * w
    heights = np.minimum((rows + 1) * h, tissue.extent_mm[1]) - rows * h
    return float((widths * heights)[inside].sum())


@dataclass
class CountResult:
    summary: dict[str, Any]  # what COUNT.json holds
    tissue: TissueMap
    figures_mm: np.ndarray  # the mitotic figures in tissue
    hotspot: Hotspot
    detections: Detections | None = None  # what was counted, with the thumbnail the overlay draws


def count_in_tissue(detections: Detections, tissue: TissueMap, options: CountOptions = CountOptions()) -> CountResult:
    """Count the mitotic figures of `detections` that lie in `tissue`, and find the hotspot."""
    spacing_mm = detections.spacing_mm
    figures = detections.xy_mm[detections.mitotic]
    figures = figures[tissue.contains(figures)] if len(figures) else figures
    area = tissue.area_mm2()
    spot = find_hotspot(figures, tissue, options.shape, options.area_mm2)
    hotspot: dict[str, Any] | None = None
    score = None
    if spot.center_mm is not None:
        cx, cy = spot.center_mm
        two, three = score_cutoffs(options.area_mm2)
        score = mitotic_score(spot.count, options.area_mm2)
        hotspot = {
            "shape": spot.shape,
            "area_mm2": spot.area_mm2,
            "center_mm": [cx, cy],
            "center_px": [cx / spacing_mm[0], cy / spacing_mm[1]],
            "count": spot.count,
            "per_mm2": spot.count / spot.area_mm2,
            "area_in_tissue_mm2": area_in_tissue(tissue, spot),
        }
    summary = {
        "mitotic_figures": int(len(figures)),
        "tissue_area_mm2": area,
        "per_mm2": len(figures) / area if area > 0 else None,
        "hotspot": hotspot,
        "score": score,
        "score_cutoffs": {"2": two, "3": three} if score is not None else None,
        "score_source": SCORE_SOURCE,
        "spacing_mm": list(spacing_mm),
    }
    return CountResult(summary, tissue, figures, spot, detections)


def count(detections: Detections, options: CountOptions = CountOptions()) -> CountResult:
    """Count on the image the detections were made on: its tissue from their thumbnail
    (`Detector.detect(..., thumbnail_side=THUMBNAIL_SIDE)` or `reader.with_image`)."""
    if detections.thumbnail is None or detections.image_size is None:
        raise ValueError("counting needs the image's thumbnail and size beside the detections")
    image = detections.image
    result = count_in_tissue(detections, tissue_map(detections.thumbnail, detections.image_size, detections.spacing_mm), options)
    if result.hotspot.center_mm is None:
        log.warning("midog count: warning: %s: no tissue found, so no hotspot and no score", image)
    elif result.summary["hotspot"]["area_in_tissue_mm2"] < 0.9 * options.area_mm2:
        share = result.summary["hotspot"]["area_in_tissue_mm2"] / options.area_mm2
        log.warning("midog count: warning: %s: only %.0f%% of the %g mm² hotspot is tissue; the score assumes the whole area",
                    image, 100 * share, options.area_mm2)
    return result


def describe(result: CountResult) -> str:
    s = result.summary
    per = "n/a" if s["per_mm2"] is None else f"{s['per_mm2']:.2f}/mm²"
    text = f"{s['mitotic_figures']} mitotic figures in {s['tissue_area_mm2']:.2f} mm² of tissue ({per})"
    if s["hotspot"]:
        h = s["hotspot"]
        text += f", hotspot {h['count']} in {h['area_mm2']:g} mm² {h['shape']}, score {s['score']}"
    return text
