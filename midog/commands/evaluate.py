"""`midog evaluate` (official MIDOG metrics, tables, plots) and `midog umap` (domain feature map)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from ..errors import MidogError

log = logging.getLogger(__name__)


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "evaluate",
        help="score predictions by the official MIDOG rules; write metrics.json, tables, plots",
        description="Score Grand Challenge 'Multiple points' predictions (<image stem>.json) against ground "
        "truth by the official MIDOG 2021 rules (F1 at 7.5 um) plus the 2022 average precision.",
    )
    p.add_argument("--predictions", type=Path, required=True, metavar="DIR", help="folder of <image stem>.json files")
    p.add_argument("--ground-truth", type=Path, required=True, metavar="FILE", help='evaluator JSON {"<file>.tiff": [[x_mm, y_mm, 0], ...]} or MIDOG.json')
    p.add_argument("--output", type=Path, required=True, metavar="DIR", help="folder for metrics.json, table.md/.csv, plots, report.md")
    p.add_argument("--domains", type=Path, default=None, metavar="FILE", help='{"<file>.tiff": "<scanner>"} or MIDOG.json (default: from MIDOG.json ground truth, else none)')
    p.add_argument("--threshold", type=float, default=None, help='detection when probability >= T (default: the container\'s names, i.e. name != "non-mitotic figure")')
    p.add_argument("--spacing-mm", type=float, default=None, help="pixel spacing for MIDOG.json ground truth, all images")
    p.add_argument("--images", type=Path, default=None, metavar="DIR", help="images whose spacing converts MIDOG.json ground truth to mm")
    p.add_argument("--count-missing", action="store_true", help="score images without a prediction file as all missed (official: skipped)")
    p.add_argument("--bootstrap", type=int, default=1000, metavar="N", help="bootstrap resamples for the 95%% intervals (default 1000; 0: none)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    p.set_defaults(run=_run_evaluate)

    u = subparsers.add_parser(
        "umap",
        help="UMAP of encoder features of random patches, coloured by scanner",
        description="Map the scanner domains in the detector's feature space (ResNet18 c5, pooled) with UMAP.",
    )
    u.add_argument("--images", type=Path, required=True, metavar="DIR")
    u.add_argument("--weights", type=Path, required=True, metavar="FILE")
    u.add_argument("--domains", type=Path, required=True, metavar="FILE", help='{"<file>.tiff": "<scanner>"} or MIDOG.json')
    u.add_argument("--output", type=Path, required=True, metavar="PNG")
    u.add_argument("--patches-per-image", type=int, default=10)
    u.add_argument("--seed", type=int, default=0)
    u.add_argument("--device", default="auto", help="auto (CUDA when available), cpu or cuda[:N]")
    u.set_defaults(run=_run_umap)


def _run_evaluate(args: argparse.Namespace) -> int:
    from ..evaluation.io import image_stem, read_domains, read_ground_truth, read_predictions
    from ..evaluation.report import write_outputs
    from ..evaluation.tables import evaluate

    if args.threshold is not None and not 0.0 <= args.threshold <= 1.0:
        raise MidogError(f"--threshold must lie in [0, 1], got {args.threshold}")
    if args.bootstrap < 0:
        raise MidogError(f"--bootstrap must be 0 or more, got {args.bootstrap}")
    gt = read_ground_truth(args.ground_truth, args.spacing_mm, args.images)
    if gt.domains is None and (args.spacing_mm is not None or args.images is not None):
        log.warning("warning: %s: already in mm; --spacing-mm and --images are ignored", args.ground_truth)
    by_stem = {}
    for name in gt.points:
        if image_stem(name) in by_stem:
            raise MidogError(f"{args.ground_truth}: {by_stem[image_stem(name)]} and {name} share the stem {image_stem(name)!r}")
        by_stem[image_stem(name)] = name

    found = read_predictions(args.predictions)
    unknown = sorted(s for s in found if s not in by_stem)
    if unknown:
        log.warning("warning: %s: %d prediction file(s) match no ground-truth image, ignored: %s", args.predictions, len(unknown), ", ".join(unknown[:10]))
    predictions = {by_stem[s]: c for s, c in found.items() if s in by_stem}
    if not predictions and not args.count_missing:
        raise MidogError(f"{args.predictions}: none of the prediction files is named after a ground-truth image (<image stem>.json)")

    domains = read_domains(args.domains) if args.domains else gt.domains
    if domains is not None:
        scored = gt.points if args.count_missing else predictions
        lacking = sorted(n for n in scored if n not in domains)
        if lacking:
            source = args.domains or args.ground_truth
            raise MidogError(f"{source}: no scanner for {len(lacking)} image(s): {', '.join(lacking[:10])}")

    ev = evaluate(gt.points, predictions, domains, args.threshold, args.count_missing, args.bootstrap, args.seed)
    sources = {"Predictions": str(args.predictions), "Ground truth": str(args.ground_truth)}
    if args.domains:
        sources["Domains"] = str(args.domains)
    write_outputs(ev, args.output, sources)
    if ev.skipped:
        log.warning("warning: %d ground-truth image(s) have no prediction file and were skipped (official rule; --count-missing counts them)", len(ev.skipped))
    v = ev.all.values
    fmt = lambda x: "n/a" if x is None else f"{x:.4f}"  # noqa: E731
    print(
        f"{len(ev.scores)} images: precision {fmt(v['precision'])}, recall {fmt(v['recall'])}, "
        f"F1 {fmt(v['f1_score'])}, AP {fmt(v['AP'])} -> {args.output / 'report.md'}",
        file=sys.stdout,
    )
    return 0


def _run_umap(args: argparse.Namespace) -> int:
    from ..evaluation.features import feature_map
    from ..evaluation.io import read_domains

    device = args.device
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    domains = read_domains(args.domains)
    embedding = feature_map(args.images, args.weights, domains, args.output, args.patches_per_image, args.seed, device)
    print(f"{len(embedding)} patches mapped -> {args.output}")
    return 0
