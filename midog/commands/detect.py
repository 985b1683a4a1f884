"""`midog detect IMAGE...`: each image's result JSON (and extras), one summary line each."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..detector.weights import published_weights
from ..results.sidecar import sidecar_path
from ..atomic import remove_stale_temp
from ..pipeline.image import check_writable, detect_or_error, output_paths
from ..pipeline.run import RunSettings
from .args import add_detection_args, run_settings


def run_detect(images: list[Path], run: RunSettings, output: str | Path | None = None, progress: bool = True, debug: bool = False) -> int:
    """Detect on every image; a bad image is reported and skipped, never losing the others.
    Settings (checked as they were settled) and outputs are checked before any work
    (UsageError, exit 2)."""
    from tqdm import tqdm

    targets = output_paths(images, output)
    check_writable(targets)
    remove_stale_temp([*targets, *map(sidecar_path, targets)])  # what a killed run left beside them
    detector = run.detector()
    failures = 0
    for image, target in tqdm(list(zip(images, targets)), desc="images", unit="image", disable=not progress or len(images) < 2):
        summary, error, _, _ = detect_or_error(detector, image, target, run, progress=progress, debug=debug)
        if error is not None:
            failures += 1
            tqdm.write(f"midog detect: error: {error}", file=sys.stderr)
            continue
        tqdm.write(summary, file=sys.stderr)
    if failures:
        print(f"midog detect: {failures} of {len(images)} images failed", file=sys.stderr)
    return 1 if failures else 0


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("detect", help="detect mitotic figures and write Multiple points JSON")
    p.add_argument("images", nargs="+", type=Path, metavar="IMAGE")
    p.add_argument(
        "--output", "-o", default=None,
        help="output file (one image), or folder (several images, an existing folder, or a path ending in /); default: ./<image stem>.json",
    )
    p.add_argument("--compile", action="store_true", help="torch.compile the network: faster on large images after ~10 s of start-up; needs a C++ compiler")
    add_detection_args(p)
    p.set_defaults(
        run=lambda a: run_detect(a.images, run_settings(a, a.weights or published_weights()), a.output, a.progress, debug=getattr(a, "debug", False))
    )
