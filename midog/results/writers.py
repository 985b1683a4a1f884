"""Everything written for one image, from its `Detections`: the challenge JSON (<stem>.json)
with its sidecar (<stem>.midog.json: the spacing it was made at, midog.results.sidecar) and,
when asked, the viewer exports (<stem>.geojson, <stem>.points.tsv, <stem>.xml, <stem>.csv),
the count (<stem>.count.json) and its picture (<stem>.overlay.png), and the review page
(review/<stem>.html with the folder's index). `midog detect` and every batch runner write
through `write_result`, so the same image gives the same bytes whichever ran it, and
`midog export` / `midog count` on the JSON file later give the same bytes again."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..atomic import write_json_atomic
from ..detector.detections import Detections
from ..errors import MidogError
from .challenge import as_written, multiple_points
from .count import THUMBNAIL_SIDE, CountOptions, count, describe
from .exports import FORMATS, ExportOptions, export, identity
from .sidecar import ResultInfo, write_info

__all__ = ["REVIEW_FOLDER", "Extras", "write_result"]

REVIEW_FOLDER = "review"


@dataclass(frozen=True)
class Extras:
    """What is written beside each result JSON."""

    exports: tuple[str, ...] = ()
    count: CountOptions | None = None
    overlay: bool = False
    qupath_objects: str = "annotation"
    qupath_bounds: str = "auto"
    review: CountOptions | None = None  # a review page, with these hotspot options

    def __bool__(self) -> bool:
        return bool(self.exports) or self.count is not None or self.review is not None

    @property
    def thumbnail_side(self) -> int | None:
        """The thumbnail the detector should keep while the image is open: counts need one."""
        return THUMBNAIL_SIDE if self.count is not None else None


def write_result(detections: Detections, target: Path, style: str, extras: Extras | None = None, weights_sha256: str | None = None) -> str:
    """Write the result JSON of `style` to `target`, its sidecar, and the `extras` beside
    it; returns a note for the summary line (empty without extras)."""
    # The sidecar first: a result is never on disk without the spacing it was made at.
    image_name = detections.image.name if detections.image is not None else None
    write_info(target, ResultInfo(detections.spacing_mm, detections.image_size, detections.offset_px, image_name,
                                  weights_sha256, float(detections.threshold), style))
    write_json_atomic(target, multiple_points(detections, style))
    if not extras:
        return ""
    written = as_written(detections, style)  # what the file says: the extras derive from that
    options = ExportOptions(extras.qupath_objects, extras.qupath_bounds, identity(target, image_name), weights_sha256)
    notes, refused = [], None
    for fmt in extras.exports:
        try:
            path = export(written, fmt, target.with_suffix(FORMATS[fmt]), options)
            notes.append(str(path) if path is not None else f"no {fmt} (no points)")
        except MidogError as exc:  # dicom-ann of a TIFF slide: the other extras are still written
            refused = refused or exc
    if extras.count is not None:
        counted = count(written, extras.count)
        write_json_atomic(target.with_name(target.stem + ".count.json"), counted.summary)
        if extras.overlay:
            from .overlay import draw_overlay

            draw_overlay(counted, target.with_name(target.stem + ".overlay.png"), heatmap=extras.count.heatmap)
        notes.append(describe(counted))
    if extras.review is not None and detections.image is not None:
        from .review import ReviewOptions, index_folder, review_slide

        folder = target.parent / REVIEW_FOLDER
        folder.mkdir(parents=True, exist_ok=True)
        entry = review_slide(written, detections.image, folder, target.stem, ReviewOptions(extras.review, progress=False), target)
        index_folder(folder)
        notes.append(str(folder / entry.page))
    if refused is not None:
        raise refused
    return "; ".join(notes)
