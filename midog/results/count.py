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
from .hotspot import Growing, Hotspot, TissueMap, find_hotspot, held_mask, region_size

log = logging.getLogger(__name__)

DEFAULT_AREA_MM2 = 2.0  # WHO / MIDOG convention: the most active 2 mm²
REFERENCE_AREA_MM2 = 2.74  # Elston & Ellis: 10 fields of 0.274 mm²
REFERENCE_CUTOFFS = (10, 20)  # counts in that area from which scores 2 and 3 start
SCORE_SOURCE = "Elston & Ellis 1991 (0-9 / 10-19 / 20+ in 2.74 mm²), scaled linearly to the area"
THUMBNAIL_SIDE = 4096  # the tissue mask: 0.5 um cells on a MIDOG region, ~8 um on a 100k px slide


LOW_COVERAGE = 0.9  # a hotspot with less of its area in tissue is reported as such


@dataclass(frozen=True)
class CountOptions:
    area_mm2: float = DEFAULT_AREA_MM2
    shape: str = "circle"
    heatmap: bool = False  # in the overlay
    fields: int | None = None  # the area as microscope fields: how many ...
    field_diameter_mm: float | None = None  # ... and their diameter


def field_area_mm2(diameter_mm: float, fields: int) -> float:
    """The area a microscope counts in `fields` round fields of `diameter_mm`."""
    return fields * math.pi * (diameter_mm / 2) ** 2


def score_cutoffs(area_mm2: float) -> tuple[int, int]:
    """The counts in `area_mm2` from which the mitotic score is 2 and 3."""
    # Rounded before ceil so that 2.74 mm² gives exactly 10 and 20, not 11 by float noise.
    return tuple(math.ceil(round(c * area_mm2 / REFERENCE_AREA_MM2, 9)) for c in REFERENCE_CUTOFFS)  # type: ignore[return-value]


def cutoffs_collapse(area_mm2: float) -> bool:
    """Whether the score's cut-offs say little at this area: one figure already scores 2,
    or scores 2 and 3 start at the same count."""
    two, three = score_cutoffs(area_mm2)
    return two <= 1 or two == three


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
    w, h = tissue.cell_mm
    # Only the cells under the region's bounding box can be held: a small slice of a big mask.
    reach = region_size(spot.shape, spot.area_mm2) / (2 if spot.shape == "square" else 1)
    cx, cy = spot.center_mm
    r0, c0 = max(0, int((cy - reach) // h) - 1), max(0, int((cx - reach) // w) - 1)
    r1, c1 = int((cy + reach) // h) + 2, int((cx + reach) // w) + 2
    rows, cols = np.nonzero(tissue.mask[r0:r1, c0:c1])
    rows, cols = rows + r0, cols + c0
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
    counted: np.ndarray | None = None  # which detections are the figures counted


def count_in_tissue(detections: Detections, tissue: TissueMap, options: CountOptions = CountOptions(), growing: Growing | None = None) -> CountResult:
    """Count the mitotic figures of `detections` that lie in `tissue`, and find the hotspot.

    `growing`: a search over these detections' points whose last set was a subset of this
    one's figures (the review slider's falling thresholds): as exact, and much faster."""
    spacing_mm = detections.spacing_mm
    mitotic = np.asarray(detections.mitotic, bool)
    counted = mitotic.copy()
    if mitotic.any():
        counted[mitotic] = tissue.contains(detections.xy_mm[mitotic])
    figures = detections.xy_mm[counted]
    area = tissue.area_mm2()
    spot = find_hotspot(figures, tissue, options.shape, options.area_mm2) if growing is None else growing.search(counted)
    hotspot: dict[str, Any] | None = None
    score = None
    if spot.center_mm is not None:
        cx, cy = spot.center_mm
        two, three = score_cutoffs(options.area_mm2)
        score = mitotic_score(spot.count, options.area_mm2)
        in_tissue = area_in_tissue(tissue, spot)
        hotspot = {
            "shape": spot.shape,
            "area_mm2": spot.area_mm2,
            "center_mm": [cx, cy],
            "center_px": [cx / spacing_mm[0], cy / spacing_mm[1]],
            "count": spot.count,
            "per_mm2": spot.count / spot.area_mm2,
            "area_in_tissue_mm2": in_tissue,
            # What the count rests on when the region lies partly on glass: the tissue in it.
            "tissue_share": in_tissue / spot.area_mm2,
            "per_mm2_of_tissue": spot.count / in_tissue if in_tissue > 0 else None,
        }
        if options.fields is not None and options.field_diameter_mm is not None:
            hotspot["fields"] = options.fields
            hotspot["field_diameter_mm"] = options.field_diameter_mm
            hotspot["per_fields"] = f"{spot.count} per {options.fields} HPF (field diameter {options.field_diameter_mm:g} mm)"
    summary = {
        "mitotic_figures": int(len(figures)),
        "tissue_area_mm2": area,
        "per_mm2": len(figures) / area if area > 0 else None,
        "hotspot": hotspot,
        "score": score,
        "score_cutoffs": {"2": two, "3": three} if score is not None else None,
        "score_cutoffs_collapse": cutoffs_collapse(options.area_mm2) if score is not None else None,
        "score_source": SCORE_SOURCE,
        "spacing_mm": list(spacing_mm),
    }
    summary["notes"] = notes(summary)
    return CountResult(summary, tissue, figures, spot, detections, counted)


def notes(summary: dict[str, Any]) -> list[str]:
    """What the numbers rest on, in words, for the command line, COUNT.json and the page."""
    h = summary["hotspot"]
    out = []
    if h is None:
        return ["no tissue found, so no hotspot and no score"]
    if h["tissue_share"] < LOW_COVERAGE:
        density = "n/a" if h["per_mm2_of_tissue"] is None else f"{h['per_mm2_of_tissue']:.4g}"
        out.append(f"only {h['area_in_tissue_mm2']:.4g} mm² ({100 * h['tissue_share']:.0f}%) of the {h['area_mm2']:.4g} mm² hotspot is tissue: "
                   f"{h['per_mm2']:.4g} per mm² of hotspot, {density} per mm² of the tissue in it; the score assumes the whole area")
    if summary["score_cutoffs_collapse"]:
        c = summary["score_cutoffs"]
        out.append(f"at {h['area_mm2']:.4g} mm² the score's cut-offs collapse (2 from {c['2']}, 3 from {c['3']} figures): the score says little")
    return out


def count(detections: Detections, options: CountOptions = CountOptions()) -> CountResult:
    """Count on the image the detections were made on: its tissue from their thumbnail
    (`Detector.detect(..., thumbnail_side=THUMBNAIL_SIDE)` or `reader.with_image`)."""
    if detections.thumbnail is None or detections.image_size is None:
        raise ValueError("counting needs the image's thumbnail and size beside the detections")
    image = detections.image
    result = count_in_tissue(detections, tissue_map(detections.thumbnail, detections.image_size, detections.spacing_mm), options)
    for note in result.summary["notes"]:
        log.warning("midog count: warning: %s: %s", image, note)
    return result


def describe(result: CountResult) -> str:
    s = result.summary
    per = "n/a" if s["per_mm2"] is None else f"{s['per_mm2']:.2f}/mm²"
    text = f"{s['mitotic_figures']} mitotic figures in {s['tissue_area_mm2']:.2f} mm² of tissue ({per})"
    if s["hotspot"]:
        h = s["hotspot"]
        where = h["per_fields"] if "per_fields" in h else f"{h['count']} in {h['area_mm2']:.4g} mm² {h['shape']}"
        text += f", hotspot {where}, score {s['score']}"
        if h["tissue_share"] < LOW_COVERAGE:
            density = "n/a" if h["per_mm2_of_tissue"] is None else f"{h['per_mm2_of_tissue']:.4g}/mm²"
            text += f" (hotspot {100 * h['tissue_share']:.0f}% tissue: {h['area_in_tissue_mm2']:.4g} mm², {density} of tissue)"
    return text
