"""Adapt, then calibrate: does `midog adapt` help `midog calibrate`? Per scanner, the same
scored images detected with the weights as they are and with adapted weights; every pair
of them as the reviewed two (default rule), the others held out and scored at the
calibrated threshold beside their best.

    midog adapt DATA/025.tiff ... DATA/028.tiff --weights W.pth -o adapted.pth
    midog detect DATA/029.tiff ... DATA/032.tiff --weights adapted.pth --style 2022 --threshold 0.05 -o ADAPTED/
    python benchmarks/adapt_calibrate.py --ground-truth DATA/ground_truth.json --scored 029,030,031,032 \
        --predictions PLAIN/ ADAPTED/ [--floor 0.4]
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from midog.evaluation.ap import curve, sweep  # noqa: E402
from midog.evaluation.io import Candidates, image_stem, read_ground_truth, read_predictions  # noqa: E402
from midog.training.calibrate import DEFAULT_RULE, GRID, Items, select  # noqa: E402
from midog.training.experiment_adapt import F1At  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ground-truth", type=Path, required=True)
    p.add_argument("--scored", required=True, help="comma-separated image stems, detected in every --predictions folder")
    p.add_argument("--predictions", type=Path, nargs="+", required=True, help="2022-style prediction folders to compare")
    p.add_argument("--floor", type=float, default=0.4, help="candidates below are dropped (the default candidate floor)")
    p.add_argument("--stored", type=float, default=0.93)
    args = p.parse_args()
    gt = read_ground_truth(args.ground_truth).points
    by_stem = {image_stem(n): n for n in gt}
    names = [by_stem[s] for s in args.scored.split(",")]
    for folder in args.predictions:
        found = read_predictions(folder)
        cands = {}
        for n in names:
            c = found[image_stem(n)]
            keep = c.probability >= args.floor
            cands[n] = Candidates(c.points[keep], c.probability[keep], c.named_mitotic[keep])
        grid = np.union1d(GRID[GRID >= args.floor - 1e-9], [args.stored])
        sw = sweep(gt, cands, grid)
        scored = lambda subset: F1At(grid, np.nan_to_num(curve(sw.totals(subset))[2]))  # noqa: E731
        rows = []
        for reviewed in itertools.combinations(names, 2):
            counts = sw.totals(reviewed)
            t = grid[select(Items.from_counts(counts), curve(counts)[2], DEFAULT_RULE, 200, np.random.default_rng(0), grid=grid)[0]]
            held = scored([n for n in names if n not in reviewed])
            rows.append((held(t), held.best_f1, t))
        r = np.array(rows)
        gap = r[:, 1] - r[:, 0]
        print(f"{folder}: F1 of the {len(names)} at {args.stored} {scored(names)(args.stored):.3f}; "
              f"{len(rows)} pairs: held-out F1 at the calibrated point {r[:, 0].mean():.3f} (thresholds {r[:, 2].min():.2f}-"
              f"{r[:, 2].max():.2f}), their best {r[:, 1].mean():.3f}, mean gap {gap.mean():.3f}, worst {gap.max():.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
