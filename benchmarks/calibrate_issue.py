"""The issue's measurement on fresh data: `midog calibrate` (the CLI, default rule) from the
first two images of the GT450-like and RS-like scanners, the scanner's other six images
scored at the calibrated threshold, at the stored one and at their own best.

    midog synth DATA --profiles midog2021 --images-per-scanner 8 --seed 2
    midog detect DATA/025.tiff ... DATA/032.tiff DATA/041.tiff ... DATA/048.tiff \
        --weights weights/demo-synthetic.pth --style 2022 -o PRED/
    python benchmarks/calibrate_issue.py DATA PRED OUT [--weights weights/demo-synthetic.pth]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from midog.evaluation.ap import curve, sweep  # noqa: E402
from midog.evaluation.io import read_ground_truth, read_predictions  # noqa: E402
from midog.training.calibrate import GRID  # noqa: E402
from midog.training.experiment_adapt import F1At  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("data", type=Path)
    p.add_argument("predictions", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--weights", type=Path, default=ROOT / "weights" / "demo-synthetic.pth")
    p.add_argument("--stored", type=float, default=0.93)
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    gt = read_ground_truth(args.data / "ground_truth.json").points
    cands = {f"{s}.tiff": c for s, c in read_predictions(args.predictions).items()}
    grid = GRID[GRID >= 0.4 - 1e-9]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for name, ids in (("GT450-like", range(25, 33)), ("RS-like", range(41, 49))):
        names = [f"{i:03d}.tiff" for i in ids]
        reviewed, held = names[:2], names[2:]
        (args.out / f"{name}-reviewed.json").write_text(json.dumps({n: gt[n].tolist() for n in reviewed}))
        out = args.out / f"{name}.pth"
        r = subprocess.run([sys.executable, "-m", "midog", "calibrate", "--predictions", str(args.predictions), "--ground-truth",
                            str(args.out / f"{name}-reviewed.json"), "--weights", str(args.weights), "-o", str(out)],
                           capture_output=True, text=True, env=env)
        print(name, "calibrate:", r.stdout.strip(), r.stderr.strip())
        t = json.loads(out.with_name(f"{name}.calibration.json").read_text())["threshold"]
        sw = sweep(gt, {n: cands[n] for n in held}, np.union1d(grid, [t, args.stored]))
        at = F1At(sw.thresholds, np.nan_to_num(curve(sw.totals(held))[2]))
        print(f"{name}: held-out {len(held)} images ({sum(len(gt[n]) for n in held)} figures): F1 at {args.stored} (stored) "
              f"{at(args.stored):.3f}, at calibrated {t:.2f}: {at(t):.3f}, best {at.best_f1:.3f} at {at.best_threshold:.2f}; "
              f"gap {at.best_f1 - at(t):.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
