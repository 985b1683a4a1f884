"""What `midog detect --export ... --count --review` writes beside each image's JSON: viewer
exports (<stem>.geojson, <stem>.points.tsv, <stem>.xml, <stem>.csv), the count
(<stem>.count.json) and its picture (<stem>.overlay.png), and the review page
(review/<stem>.html with the folder's index). Everything derives from the JSON, its sidecar
and the image, as `midog export`, `midog count` and `midog review` would derive it later."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .count import CountOptions, add_count_options, count_image, describe, options_from_args
from .exports import FORMATS, add_qupath_args, export, identity, placement
from .reader import points_from_json

REVIEW_FOLDER = "review"


@dataclass(frozen=True)
class Extras:
    exports: tuple[str, ...] = ()
    count: CountOptions | None = None
    overlay: bool = False
    qupath_objects: str = "annotation"
    qupath_bounds: str = "auto"
    review: bool = False
    review_count: CountOptions | None = None  # the hotspot options for the review page

    def __bool__(self) -> bool:
        return bool(self.exports) or self.count is not None or self.review


def write_extras(result: dict[str, Any], target: Path, image: Path, mpp: float | None, extras: Extras, spacing_mm: tuple[float, float],
                 offset_px: tuple[int, int] | None = None, threshold: float | None = None) -> str:
    """Write the extras for one image's `result` (already written to `target`, its points in
    mm at `spacing_mm`, the spacing the detector used, on a slide whose non-empty region
    starts at `offset_px`); returns a note for the summary line."""
    from .output import write_json_atomic

    if not extras:
        return ""
    points = points_from_json(result, target)
    place = placement(spacing_mm, offset_px, extras.qupath_bounds, identity(target, image.name))
    notes = [str(export(points, place, fmt, target.with_suffix(FORMATS[fmt]), extras.qupath_objects)) for fmt in extras.exports]
    if extras.count is not None:
        overlay = target.with_name(target.stem + ".overlay.png") if extras.overlay else None
        counted = count_image(points, image, mpp, extras.count, overlay, spacing_mm)
        write_json_atomic(target.with_name(target.stem + ".count.json"), counted.summary)
        notes.append(describe(counted))
    if extras.review:
        from .review import ReviewOptions, index_folder, review_slide

        folder = target.parent / REVIEW_FOLDER
        folder.mkdir(parents=True, exist_ok=True)
        entry = review_slide(points, image, spacing_mm, folder, target.stem, ReviewOptions(extras.review_count or CountOptions(), threshold=threshold, progress=False), target)
        notes.append(str(folder / entry.page))
        index_folder(folder)
    return "; ".join(notes)


def add_extras_cli(p: argparse.ArgumentParser) -> None:
    """--export, --count (with the hotspot options), --overlay and --review for `midog detect`."""
    group = p.add_argument_group("exports, count and review (written beside each JSON output)")
    group.add_argument("--export", action="append", choices=list(FORMATS), default=[],
                       help="also write <stem>.geojson (QuPath), .points.tsv (QuPath's Counting tool), .xml (ASAP) or .csv; repeatable")
    add_qupath_args(group)
    group.add_argument("--count", action="store_true", help="also write <stem>.count.json: mitotic count, per mm², hotspot, score")
    group.add_argument("--overlay", action="store_true", help="with --count: also draw <stem>.overlay.png")
    group.add_argument("--review", action="store_true", help=f"also write a review page per image: {REVIEW_FOLDER}/<stem>.html and {REVIEW_FOLDER}/index.html")
    add_count_options(group)  # type: ignore[arg-type]


def extras_from_args(args: argparse.Namespace) -> Extras:
    from ..errors import MidogError

    if args.overlay and not args.count:
        raise MidogError("--overlay draws the count's picture: add --count")
    review = getattr(args, "review", False)
    # The hotspot options shape the review page's hotspot too, with or without --count.
    hotspot = options_from_args(args) if args.count or review else None
    return Extras(tuple(dict.fromkeys(args.export)), hotspot if args.count else None, args.overlay,
                  args.qupath_objects, args.qupath_bounds, review, hotspot if review else None)
