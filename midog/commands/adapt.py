"""`midog adapt`: adapt weights to a scanner's unlabelled images (BatchNorm statistics)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import UsageError


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "adapt",
        help="re-estimate the encoder's BatchNorm statistics on a scanner's unlabelled images",
        description="Label-free adaptation: the encoder's BatchNorm running statistics are re-estimated on tissue "
        "tiles of IMAGES (the new scanner's), every other tensor copied unchanged; OUT.pth records which images and "
        "how many tiles. The recorded operating point is kept: measure or calibrate it (docs/new-scanner.md says "
        "what it did on the synthetic scanners).",
    )
    p.add_argument("images", nargs="+", type=Path, metavar="IMAGE", help="the new scanner's images (no labels needed)")
    p.add_argument("--weights", type=Path, required=True, metavar="IN.pth")
    p.add_argument("--output", "-o", type=Path, required=True, metavar="OUT.pth")
    p.add_argument("--tiles-per-image", type=int, default=16, metavar="N", help="tissue tiles drawn per image (default 16)")
    p.add_argument("--blend", type=float, default=1.0, help="share of the new statistics, the rest the old ones' (default 1.0: the new only)")
    p.add_argument("--mpp", type=float, default=None, help="micrometres per pixel, for images that do not record it")
    p.add_argument("--seed", type=int, default=0, help="which tiles are drawn when an image has more (default 0)")
    p.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    from ..results.sidecar import file_sha256
    from ..training.adapt import adapt

    if args.tiles_per_image < 1:
        raise UsageError(f"--tiles-per-image must be at least 1, got {args.tiles_per_image}")
    if args.output.resolve() == args.weights.resolve():
        raise UsageError(f"{args.output}: would overwrite --weights; write the adapted copy to another file")
    missing = [str(p) for p in args.images if not p.is_file()]
    if missing:
        raise UsageError(f"image(s) not found: {', '.join(missing[:5])}")
    result = adapt(args.weights, args.images, args.output, args.tiles_per_image, blend=args.blend, seed=args.seed,
                   mpp=args.mpp, source_sha256=file_sha256(args.weights))
    print(f"{result.layers} BatchNorm layers re-estimated on {result.tiles} tissue tiles of {len(result.images)} image(s) -> {args.output}", file=sys.stdout)
    return 0
