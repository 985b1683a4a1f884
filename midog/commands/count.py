"""`midog count PREDICTIONS.json --image IMAGE`: the mitotic count, hotspot and score."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..atomic import write_json_atomic
from ..results.count import THUMBNAIL_SIDE, count, describe
from ..results.overlay import draw_overlay
from ..results.reader import read_result_on
from .args import add_count_args, add_result_parser, count_options


def _run_count(args: argparse.Namespace) -> int:
    options = count_options(args)
    result = count(read_result_on(args.result, args.image, args.mpp, thumbnail_side=THUMBNAIL_SIDE), options)
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
    p.set_defaults(run=_run_count)
