"""`midog calibrate`: the operating point for a new scanner, from a few reviewed images."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from ..errors import MidogError, UsageError

log = logging.getLogger(__name__)


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    from ..training.calibrate import DEFAULT_RULE, RULES

    p = subparsers.add_parser(
        "calibrate",
        help="choose the operating point on reviewed images of your scanner; write weights that use it",
        description="Sweep F1 against the threshold on the reviewed images (those the ground truth lists), choose "
        "the operating point, and write a copy of the weights that records it: `midog detect --weights OUT.pth` and "
        "process.py then use it without a flag. Beside OUT.pth: OUT.calibration.md/.png/.json (the curve, the "
        "bootstrap interval, how many figures it rests on). Needs 2022-style predictions (`midog detect --style 2022`), "
        "made with the same weights. See docs/new-scanner.md.",
    )
    p.add_argument("--predictions", type=Path, required=True, metavar="DIR", help="folder of <image stem>.json 2022-style predictions; files of images the ground truth does not list are ignored")
    p.add_argument("--ground-truth", type=Path, required=True, metavar="FILE", help="the reviewed images' labels: evaluator JSON, MIDOG.json or a review page's <stem>.labels.json")
    p.add_argument("--weights", type=Path, required=True, metavar="IN.pth", help="the weights that made the predictions")
    p.add_argument("--output", "-o", type=Path, required=True, metavar="OUT.pth", help="the calibrated copy of the weights")
    p.add_argument("--domains", type=Path, default=None, metavar="FILE", help='{"<file>.tiff": "<scanner>"} or MIDOG.json: with --scanner, which images are that scanner\'s')
    p.add_argument("--scanner", default=None, metavar="NAME", help="calibrate on this scanner's reviewed images only (needs scanners from --domains or MIDOG.json)")
    p.add_argument("--rule", choices=RULES, default=DEFAULT_RULE, help=f"how the threshold is picked from the F1 curve (default {DEFAULT_RULE}: the middle of the near-best plateau of a bootstrap whose scores are jittered; it transferred best to held-out images of the same scanners; the rules compared in docs/new-scanner.md)")
    p.add_argument("--bootstrap", type=int, default=2000, metavar="N", help="bootstrap resamples for the F1 interval (default 2000)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    p.add_argument("--spacing-mm", type=float, default=None, help="pixel spacing for MIDOG.json-style ground truth, all images")
    p.add_argument("--images", type=Path, default=None, metavar="DIR", help="images whose spacing converts MIDOG.json-style ground truth to mm")
    p.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    from ..evaluation.io import read_domains, read_ground_truth
    from ..network.retinanet import read_state_dict
    from ..results.sidecar import file_sha256
    from ..training.calibrate import calibrate, calibrated_weights, read_prediction_folder, read_reviewed
    from ..training.calibrate_report import summary_line, write_report

    if args.bootstrap < 0:
        raise UsageError(f"--bootstrap must be 0 or more, got {args.bootstrap}")
    if args.output.resolve() == args.weights.resolve():
        raise UsageError(f"{args.output}: would overwrite --weights; write the calibrated copy to another file")
    _, meta = read_state_dict(args.weights)
    gt = read_ground_truth(args.ground_truth, args.spacing_mm, args.images)
    points = gt.points
    if args.scanner is not None:
        domains = read_domains(args.domains) if args.domains else gt.domains
        if not domains:
            raise UsageError("--scanner needs the images' scanners: pass --domains FILE")
        points = {n: p for n, p in points.items() if domains.get(n) == args.scanner}
        if not points:
            raise MidogError(f"{args.ground_truth}: no reviewed image of scanner {args.scanner!r}")
    folder = read_prediction_folder(args.predictions)
    sha = file_sha256(args.weights)
    source_sha = (meta.get("calibration") or {}).get("source_sha256")
    if folder.weights_sha256 and not folder.weights_sha256 <= {sha, source_sha}:
        raise MidogError(
            f"{args.predictions}: the predictions were made with other weights (SHA-256 {sorted(folder.weights_sha256)[0][:12]}...), "
            f"not {args.weights}; detect the reviewed images with the weights you calibrate"
        )
    reviewed = read_reviewed(folder.candidates, folder.probabilities_given, points, folder.recorded_floor, str(args.predictions))
    if reviewed.ignored:
        log.info("%s: %d prediction file(s) of images not in the ground truth ignored", args.predictions, len(reviewed.ignored))
    previous = meta.get("threshold")
    cal = calibrate(reviewed, float(previous) if previous is not None else None, args.rule, args.bootstrap, args.seed)
    calibrated_weights(args.weights, args.output, cal, sha)
    sources = {"Predictions": str(args.predictions), "Ground truth": str(args.ground_truth)}
    if args.scanner:
        sources["Scanner"] = args.scanner
    paths = write_report(cal, args.weights, args.output, sources)
    for warning in cal.warnings:
        log.warning("warning: %s", warning)
    print(f"{summary_line(cal)} -> {args.output} (report {paths['md']})", file=sys.stdout)
    return 0
