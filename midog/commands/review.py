"""`midog review`: review pages of results, one per slide, and the cohort's index page."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

log = logging.getLogger(__name__)


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    from ..config import REFERENCE
    from ..results.review_tiles import FORMATS
    from .args import add_count_args

    p = subparsers.add_parser(
        "review", help="a review page per slide (zoomable slide, candidates, threshold slider, gallery, count) and a cohort index, offline HTML",
        description="Write OUT/<result stem>.html per slide, with its pictures in OUT/<stem>_files/, and OUT/index.html. "
        "The pages open from disk in any browser, with no network.",
    )
    p.add_argument("results", type=Path, nargs="+", metavar="RESULT.json", help='"Multiple points" results of midog detect or process.py')
    p.add_argument("--image", "--images", dest="images", type=Path, nargs="+", action="extend", required=True, metavar="IMAGE",
                   help="the images, one per result in the same order")
    p.add_argument("--output", "-o", type=Path, required=True, metavar="DIR", help="folder for the pages")
    p.add_argument("--mpp", type=float, default=None, help="micrometres per pixel, overriding the images' spacing or standing in for it")
    p.add_argument("--threshold", type=float, default=None, help="where the threshold slider starts (default: the detector's operating point)")
    p.add_argument("--review-floor", type=float, default=None, metavar="P",
                   help="candidates offered for review (j/k): those with a probability of at least P, best first "
                   f"(default: the detector's candidate threshold, {REFERENCE.candidate_threshold:g})")
    p.add_argument("--gallery", type=int, default=200, metavar="N", help="crops of the N best-scoring candidates (default 200)")
    p.add_argument("--tile-format", choices=list(FORMATS), default="jpeg", help="format of the slide's tiles (default jpeg)")
    add_count_args(p)  # the hotspot of `midog count` (--heatmap has no use here)
    p.set_defaults(run=_run_review)


def _run_review(args: argparse.Namespace) -> int:
    from .args import count_options
    from ..errors import UsageError
    from ..results.review import ReviewOptions, review_all, write_index

    if args.gallery < 0:
        raise UsageError("--gallery must be 0 or more")
    if args.threshold is not None and not 0 <= args.threshold <= 1:
        raise UsageError(f"--threshold must lie in [0, 1], not {args.threshold:g}")
    if args.review_floor is not None and not 0 <= args.review_floor <= 1:
        raise UsageError(f"--review-floor must lie in [0, 1], not {args.review_floor:g}")
    options = ReviewOptions(count_options(args), args.tile_format, args.gallery, args.threshold, progress=not getattr(args, "quiet", False),
                            review_floor=args.review_floor)
    entries = []
    for entry in review_all(args.results, args.images, args.output, args.mpp, options):
        entries.append(entry)
        for note in entry.notes:
            log.warning("midog review: warning: %s", note)
        if entry.error:
            log.error("midog review: error: %s", entry.error)
        else:
            print(f"{entry.name}: {entry.figures} mitotic figures, hotspot {entry.hotspot}, score {entry.score} -> {args.output / (entry.name + '.html')}")
    index = write_index(entries, args.output)
    failed = sum(e.error is not None for e in entries)
    print(f"{len(entries) - failed} of {len(entries)} slides reviewed -> {index}")
    return 1 if failed else 0
