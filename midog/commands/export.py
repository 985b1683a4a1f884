"""`midog export RESULT.json --format geojson|qupath-points|asap|csv|dicom-ann`: a result for viewers,
in pixels at the spacing the result was made at (its sidecar's, else the image's or --mpp)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ..errors import MidogError
from ..results.exports import FORMATS, QUPATH_FORMATS, ExportOptions, export, identity, qupath_offset
from ..results.sidecar import read_recorded, sidecar_path
from .args import add_qupath_args, add_result_parser

log = logging.getLogger(__name__)


def _run_export(args: argparse.Namespace) -> int:
    if args.image is None and args.mpp is None and not sidecar_path(args.result).is_file():
        raise MidogError("pass --image (its spacing converts mm to pixels) or --mpp")
    found, notes = read_recorded(args.result, args.image, args.mpp)
    for note in notes:
        log.warning("midog export: warning: %s", note)
    target = args.output or args.result.with_suffix(FORMATS[args.format])
    if target.resolve() == args.result.resolve():
        raise MidogError(f"{target}: the export would overwrite the result it is made from; choose another -o")
    options = ExportOptions(args.qupath_objects, args.qupath_bounds, identity(args.result, _image_name(args, found)), _weights(args))
    if export(found, args.format, target, options) is None:
        print(f"{args.result}: no points, so no {args.format} object written")
        return 0
    offset = qupath_offset(found, options)
    shifted = f", in QuPath's pixels (level 0 minus the slide's bounds offset {offset[0]:g}, {offset[1]:g})" if args.format in QUPATH_FORMATS and any(offset) else ""
    print(f"{args.result}: {len(found)} points -> {target}{shifted}")
    return 0


def _weights(args: argparse.Namespace) -> str | None:
    """The weights' SHA-256 the sidecar records (DICOM annotations name the algorithm's weights)."""
    from ..results.sidecar import read_info

    info = read_info(args.result)
    return info.weights_sha256 if info is not None else None


def _image_name(args: argparse.Namespace, found: object) -> str | None:
    """The image the ids derive from: the one the sidecar names (as at detection), else --image."""
    from ..results.sidecar import read_info

    info = read_info(args.result)
    if info is not None and info.image:
        return info.image
    return args.image.name if args.image is not None else None


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    p = add_result_parser(
        subparsers, "export",
        help="convert a result JSON to GeoJSON or Counting-tool points (QuPath), ASAP XML or CSV, in pixels",
        result=("RESULT.json", 'a "Multiple points" result of midog detect or process.py'),
        image_help="the image the result belongs to: checked against the result's <stem>.midog.json, "
        "or its spacing converts mm to pixels when there is none",
    )
    p.add_argument("--format", choices=list(FORMATS), required=True,
                   help="geojson: QuPath objects; qupath-points: tab-separated points for QuPath's Counting tool; asap: ASAP XML; csv: a table; "
                   "dicom-ann: a DICOM Microscopy Bulk Simple Annotations object (DICOM slides only: pass the series with --image)")
    p.add_argument("--output", "-o", type=Path, default=None, help="output file (default: the result's name with .geojson, .points.tsv, .xml, .csv or .dcm)")
    add_qupath_args(p)
    p.set_defaults(run=_run_export)
