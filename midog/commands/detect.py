"""`midog detect IMAGE...`: each image's result JSON (and extras), one summary line each."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..detector.weights import published_weights
from ..errors import UsageError
from ..results.sidecar import sidecar_path
from ..atomic import remove_stale_temp
from ..pipeline.image import DetectOptions, check_writable, detect_or_error, output_paths
from .args import add_detection_args, detect_options


def run_detect(
    images: list[Path],
    weights: Path,
    output: str | Path | None = None,
    options: DetectOptions = DetectOptions(),
    progress: bool = True,
    debug: bool = False,
) -> int:
    """Detect on every image; a bad image is reported and skipped, never losing the others.
    Options and outputs are checked before any work (UsageError, exit 2)."""
    from tqdm import tqdm

    options.check()
    if not weights.is_file():
        raise UsageError(f"{weights}: weights file not found (run `midog fetch` for the published weights)")
    targets = output_paths(images, output)
    check_writable(targets)
    remove_stale_temp([*targets, *map(sidecar_path, targets)])  # what a killed run left beside them
    detector = options.detector(weights)
    failures = 0
    for image, target in tqdm(list(zip(images, targets)), desc="images", unit="image", disable=not progress or len(images) < 2):
        summary, error, _ = detect_or_error(detector, image, target, progress=progress, debug=debug, **options.per_image())
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
        run=lambda a: run_detect(
            a.images, a.weights or published_weights(), a.output, detect_options(a), a.progress, debug=getattr(a, "debug", False)
        )
    )
