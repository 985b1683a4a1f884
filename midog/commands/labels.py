"""`midog labels merge A.labels.json B.labels.json -o cohort.json`: the review page's labels of
several slides joined into one file (MIDOG.json layout) for evaluation, calibration and training."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("labels", help="work with the labels saved from review pages (merge several slides' into one file)",
                              description="Labels files are what the review page saves (s): MIDOG.json layout, one slide each.")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    m = actions.add_parser("merge", help="join several slides' labels into one file (image and annotation ids renumbered)",
                           description="Join <image stem>.labels.json files saved by review pages into one MIDOG.json-layout file.")
    m.add_argument("labels", type=Path, nargs="+", metavar="LABELS.json", help="labels files saved by review pages")
    m.add_argument("--output", "-o", type=Path, required=True, metavar="COHORT.json", help="the joined file")
    m.set_defaults(run=_run_merge)


def _run_merge(args: argparse.Namespace) -> int:
    from ..atomic import write_json_atomic
    from ..results.labels import merge_labels

    merged = merge_labels(args.labels)
    write_json_atomic(args.output, merged, indent=1)
    print(f"{len(merged['images'])} images, {len(merged['annotations'])} labelled points "
          f"({sum(a['category_id'] == 1 for a in merged['annotations'])} mitotic figures), {len(merged['unsure'])} unsure -> {args.output}")
    return 0
