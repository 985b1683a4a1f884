"""`midog count PREDICTIONS.json --image IMAGE`: the mitotic count, hotspot and score."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ..atomic import write_json_atomic
from ..results.count import THUMBNAIL_SIDE, count, describe
from ..results.overlay import draw_overlay
from ..results.reader import at_threshold
from ..results.sidecar import read_recorded
from .args import add_count_args, add_result_parser, count_options

log = logging.getLogger(__name__)


def _run_count(args: argparse.Namespace) -> int:
    options = count_options(args)
    found, notes = read_recorded(args.result, args.image, args.mpp, thumbnail_side=THUMBNAIL_SIDE)
    for note in notes:
        log.warning("midog count: warning: %s", note)
    if args.threshold is not None:
        found = at_threshold(found, args.threshold, args.result)
    result = count(found, options)
    if args.threshold is not None:  # without one, the file's own names decide, as at detection
        result.summary["threshold"] = args.threshold
    if args.overlay is not None:
        draw_overlay(result, args.overlay, heatmap=options.heatmap)
    target = args.output or args.result.with_name(args.result.stem + ".count.json")
    write_json_atomic(target, result.summary)
    print(f"{args.result}: {describe(result)} -> {target}")
    return 0


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    p = add_result_parser(
        subparsers, "count", image_required=True,  # tissue and hotspot need the pixels, not only the spacing
        help="mitotic count, mitoses per mm², the hotspot and the mitotic score",
        result=("PREDICTIONS.json", 'a "Multiple points" result (any style)'),
        image_help="the image: its tissue and spacing",
    )
    add_count_args(p)
    p.add_argument("--output", "-o", type=Path, default=None, help="COUNT.json (default: <predictions stem>.count.json beside it)")
    p.add_argument("--overlay", type=Path, default=None, metavar="PICTURE.png", help="draw the thumbnail with tissue, figures and hotspot")
    p.add_argument("--threshold", type=float, default=None, metavar="T",
                   help="count the candidates with a probability above T as mitotic figures, whatever the file names them (2022 results)")
    p.set_defaults(run=_run_count)
