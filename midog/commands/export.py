"""`midog export RESULT.json --format geojson|asap|csv`: a result for viewers, in level-0 pixels."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import MidogError
from ..results.exports import FORMATS, export
from ..results.reader import read_result_on
from .args import add_result_parser


def _run_export(args: argparse.Namespace) -> int:
    found = read_result_on(args.result, args.image, args.mpp)
    target = args.output or args.result.with_suffix(FORMATS[args.format])
    if target.resolve() == args.result.resolve():
        raise MidogError(f"{target}: the export would overwrite the result it is made from; choose another -o")
    export(found, args.format, target)
    print(f"{args.result}: {len(found)} points -> {target}")
    return 0


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    p = add_result_parser(
        subparsers, "export",
        help="convert a result JSON to GeoJSON (QuPath), ASAP XML or CSV, in level-0 pixels",
        result=("RESULT.json", 'a "Multiple points" result of midog detect or process.py'),
        image_help="the image the result belongs to: its spacing converts mm to pixels",
    )
    p.add_argument("--format", choices=list(FORMATS), required=True)
    p.add_argument("--output", "-o", type=Path, default=None, help="output file (default: the result's name with .geojson, .xml or .csv)")
    p.set_defaults(run=_run_export)
