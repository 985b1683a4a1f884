"""`midog synth`: write a synthetic data set from the command line."""

from __future__ import annotations

import argparse
from typing import Any

from ..errors import MidogError
from ..synth.dataset import make_dataset
from ..synth.profiles import DEFAULT_PROFILES, SCANNER_SETS


def _parse_size(text: str) -> tuple[int, int]:
    parts = text.lower().split("x")
    try:
        if len(parts) == 1:
            w = h = int(parts[0])
        elif len(parts) == 2:
            w, h = int(parts[0]), int(parts[1])
        else:
            raise ValueError
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, e.g. 1024x1024, got {text!r}") from None
    if w <= 0 or h <= 0:
        raise argparse.ArgumentTypeError(f"size must be positive, got {text!r}")
    return w, h


def add_cli(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "synth",
        help="write a synthetic multi-scanner data set in the MIDOG layout",
        description=(
            "Write synthetic H&E-like TIFFs from four synthetic scanners plus MIDOG.json, "
            "unlabeled_annotations.json (last scanner), ground_truth.json, domains.json "
            "and scanners.json; or, with --slide, one whole-slide image. Same arguments give "
            "byte-identical files."
        ),
    )
    p.add_argument("out_dir", metavar="OUT_DIR", help="output folder (created if missing)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument(
        "--images-per-scanner", type=int, default=4, metavar="N", help="images per scanner (default 4)"
    )
    p.add_argument(
        "--size", type=_parse_size, default=(1024, 1024), metavar="WxH", help="image size (default 1024x1024)"
    )
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help="images rendered in parallel threads (default: up to 2); the output does not depend on it",
    )
    p.add_argument(
        "--profiles",
        choices=list(SCANNER_SETS),
        default=DEFAULT_PROFILES,
        help="scanner profiles: legacy (default: the original synthetic scanners A-D, byte-identical to earlier "
        "data) or midog2021 (modelled on the MIDOG 2021 scanners, plus two unseen test scanners that are "
        "never in MIDOG.json; docs/synthetic-scanners.md)",
    )
    p.add_argument(
        "--slide", type=_parse_size, default=None, metavar="WxH",
        help="instead of a data set: OUT_DIR/slide.tiff, a pyramidal JPEG-tiled whole-slide image of W x H px "
        "(glass with square regions of synthetic tissue; levels down by 4), for trying the slide features",
    )
    p.add_argument("--regions", type=int, default=4, metavar="N", help="with --slide: tissue regions on the glass (default 4)")
    p.set_defaults(run=_run)


def _run_slide(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..synth.slide import make_slide

    width, height = args.slide
    if args.regions < 1:
        raise MidogError(f"--regions must be at least 1, not {args.regions}")
    # Regions a third of the short side, at most 2048 px; levels down to about 512 px.
    region = max(64, min(2048, min(width, height) // 3))
    levels = 1
    while max(width, height) / 4**levels >= 512 and levels < 8:
        levels += 1
    target = Path(args.out_dir) / "slide.tiff"
    target.parent.mkdir(parents=True, exist_ok=True)
    regions = make_slide(target, width, height, seed=args.seed, n_regions=args.regions, region_size=region, levels=levels)
    print(f"wrote {target}: {width} x {height} px, {levels} levels, {len(regions)} tissue regions of {region} px at "
          + ", ".join(f"({x}, {y})" for x, y, _ in regions))
    return 0


def _run(args: argparse.Namespace) -> int:
    import time

    if args.slide is not None:
        return _run_slide(args)
    t0 = time.perf_counter()
    summary = make_dataset(
        args.out_dir,
        seed=args.seed,
        images_per_scanner=args.images_per_scanner,
        size=args.size,
        workers=args.workers,
        profiles=args.profiles,
    )
    dt = time.perf_counter() - t0
    print(f"wrote {summary['counts']['images']} images to {summary['out_dir']} in {dt:.1f} s")
    for name, info in summary["scanners"].items():
        first, last = info["id_range"]
        c = info["counts"]
        tag = "" if info["labelled"] else "  (unlabeled: labels in unlabeled_annotations.json)"
        if info.get("unseen"):
            tag = "  (unseen test scanner: labels in unseen_annotations.json, not in MIDOG.json)"
        print(
            f"  {name}: ids {first}-{last}, {info['spacing_mm'] * 1000:.4f} um/px, "
            f"{c['mitotic figure']} mitotic figures, {c['not mitotic figure']} look-alikes{tag}"
        )
    return 0
