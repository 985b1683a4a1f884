"""What `midog detect --export ... --count` writes beside each image's JSON: viewer exports
(<stem>.geojson, <stem>.xml, <stem>.csv), the count (<stem>.count.json) and its picture
(<stem>.overlay.png). Everything derives from the JSON and the image, as `midog export`
and `midog count` would derive it later."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .count import CountOptions, add_count_options, count_image, describe, options_from_args
from .exports import FORMATS, export
from .reader import points_from_json


@dataclass(frozen=True)
class Extras:
    exports: tuple[str, ...] = ()
    count: CountOptions | None = None
    overlay: bool = False

    def __bool__(self) -> bool:
        return bool(self.exports) or self.count is not None


def write_extras(result: dict[str, Any], target: Path, image: Path, mpp: float | None, extras: Extras, spacing_mm: tuple[float, float]) -> str:
    """Write the extras for one image's `result` (already written to `target`, its points in
    mm at `spacing_mm`, the spacing the detector used); returns a note for the summary line."""
    from .output import write_json_atomic

    if not extras:
        return ""
    points = points_from_json(result, target)
    notes = [str(export(points, spacing_mm, fmt, target.with_suffix(FORMATS[fmt]))) for fmt in extras.exports]
    if extras.count is not None:
        overlay = target.with_name(target.stem + ".overlay.png") if extras.overlay else None
        counted = count_image(points, image, mpp, extras.count, overlay)
        write_json_atomic(target.with_name(target.stem + ".count.json"), counted.summary)
        notes.append(describe(counted))
    return "; ".join(notes)


def add_extras_cli(p: argparse.ArgumentParser) -> None:
    """--export, --count (with the hotspot options) and --overlay for `midog detect`."""
    group = p.add_argument_group("exports and count (written beside each JSON output)")
    group.add_argument("--export", action="append", choices=list(FORMATS), default=[], help="also write <stem>.geojson (QuPath), .xml (ASAP) or .csv; repeatable")
    group.add_argument("--count", action="store_true", help="also write <stem>.count.json: mitotic count, per mm², hotspot, score")
    group.add_argument("--overlay", action="store_true", help="with --count: also draw <stem>.overlay.png")
    add_count_options(group)  # type: ignore[arg-type]


def extras_from_args(args: argparse.Namespace) -> Extras:
    from ..errors import MidogError

    if args.overlay and not args.count:
        raise MidogError("--overlay draws the count's picture: add --count")
    count = options_from_args(args) if args.count else None
    return Extras(tuple(dict.fromkeys(args.export)), count, args.overlay)
