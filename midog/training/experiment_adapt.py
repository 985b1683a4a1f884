"""The adaptation axis of `midog experiment`: what each way of meeting a shifted scanner buys
each trained model.

Per model, seed and shifted scanner (the unlabelled training scanner and the unseen ones):
the scanner's held-out images in a seeded order (`scanner_images`); the first K (K = 1, 2, 4,
where the scanner has more) are the reviewed images of the arms "calibrate K" (`midog
calibrate`'s rule on their candidates) and "fine-tune K", the first max K the unlabelled
images of "adapt"; every arm, "none" (the validation operating point) included, is scored on
the same images after the largest K, which no arm saw, at the operating point it deploys.
Beside each: those images' best threshold. The calibrate arms need no new inference (the
held-out predictions hold every candidate down to the experiment's `min_score`); the adapt
and fine-tune arms (experiment_arms) detect anew and write their rows to
`DIR/seedS/MODEL-arms.json`, read here.
"""

from __future__ import annotations

import json
import statistics
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import MidogError
from ..evaluation.markdown import md_text

KS = (1, 2, 4)


def calibration_arms(result: Any, status: dict[str, str], shifted: set[str], ks: tuple[int, ...] = KS, n_bootstrap: int = 200,
                     calibrate_arms: bool = True) -> list[dict[str, Any]]:
    """Rows {model, seed, scanner, arm, k, images, threshold, f1, best_f1, best_threshold}: "none" and
    (with `calibrate_arms`) "calibrate K"."""
    from ..evaluation.io import read_predictions
    from .calibrate import GRID, Reviewed, calibrate

    record = result.run_dir.parent / f"{result.run_dir.name}-heldout.json"
    if not record.is_file():  # a run made before the held-out images were recorded has no arms
        return []
    held = json.loads(record.read_text())
    gt = {n: np.asarray(p, float).reshape(-1, 3) for n, p in held["ground_truth"].items()}
    found = read_predictions(result.predictions_dir)
    stems = {n.rsplit(".", 1)[0]: n for n in gt}
    cands = {stems[s]: c for s, c in found.items() if s in stems}
    floor = min((float(c.probability.min()) for c in cands.values() if len(c)), default=float(GRID[0]))
    rows = []
    for scanner in sorted(shifted):
        plan = scanner_images([n for n in cands if held["domains"].get(n) == scanner], result.seed, scanner, ks)
        if plan is None:
            continue
        names, usable, scored = plan
        at = f1_at(gt, {n: cands[n] for n in scored}, floor, [result.validation.chosen])
        base = {"model": result.model, "seed": result.seed, "scanner": scanner, "status": status.get(scanner, "?"),
                "images": len(scored), "best_f1": at.best_f1, "best_threshold": at.best_threshold}
        rows.append({**base, "arm": "none", "k": 0, "threshold": result.validation.chosen, "f1": at(result.validation.chosen)})
        for k in usable if calibrate_arms else []:
            reviewed = names[:k]
            try:
                cal = calibrate(Reviewed({n: gt[n] for n in reviewed}, {n: cands[n] for n in reviewed}, floor),
                                result.validation.chosen, n_bootstrap=n_bootstrap, seed=result.seed)
            except MidogError:  # reviewed images without a figure: nothing to calibrate on
                continue
            rows.append({**base, "arm": f"calibrate K={k}", "k": k, "threshold": cal.threshold, "f1": at(cal.threshold)})
    return rows


def scanner_images(names: list[str], seed: int, scanner: str, ks: tuple[int, ...] = KS) -> tuple[list[str], list[int], list[str]] | None:
    """(the scanner's held-out images in the seeded order every arm shares, the Ks it allows,
    the scored images after the largest of them); None when it has too few for any K."""
    names = sorted(names)
    usable = [k for k in ks if k < len(names)]
    if not usable:
        return None
    order = np.random.default_rng([seed, zlib.crc32(scanner.encode())]).permutation(len(names))
    names = [names[i] for i in order]
    return names, usable, names[max(usable):]


class F1At:
    """F1 of scored images against the threshold: `self(t)` at the grid step nearest t, and
    the best F1 and its threshold."""

    def __init__(self, grid: np.ndarray, f1: np.ndarray) -> None:
        self.grid, self.f1 = grid, f1
        best = int(np.argmax(f1))
        self.best_f1, self.best_threshold = float(f1[best]), float(grid[best])

    def __call__(self, t: float) -> float:
        return float(self.f1[int(np.argmin(np.abs(self.grid - t)))])


def f1_at(ground_truth: dict[str, np.ndarray], candidates: dict[str, Any], floor: float, extra: list[float] = ()) -> F1At:
    """The official F1 of `candidates` (pooled over their images) for every calibration grid
    step from `floor` up, plus the thresholds `extra` (the deployed ones, exactly)."""
    from ..evaluation.ap import curve, sweep
    from .calibrate import GRID

    grid = np.union1d(GRID[GRID >= floor - 1e-9], list(extra))
    sw = sweep(ground_truth, candidates, grid)
    return F1At(grid, np.nan_to_num(curve(sw.totals(list(candidates)))[2]))


def arms_file(result: Any) -> Path:
    """Where experiment_arms keeps the adapt and fine-tune rows of one model and seed."""
    return result.run_dir.parent / f"{result.run_dir.name}-arms.json"


def recorded_arms(result: Any) -> list[dict[str, Any]]:
    path = arms_file(result)
    return json.loads(path.read_text())["rows"] if path.is_file() else []


def adaptation_table(rows: list[dict[str, Any]]) -> list[str]:
    """Markdown: per model and scanner, each arm's F1 as the mean over seeds (and the seeds'
    range), beside the scored images' best; then the same pooled over the shifted scanners."""
    if not rows:
        return ["No shifted scanner has more than one held-out image: no calibration arm could be scored.", ""]
    arms = sorted({r["arm"] for r in rows}, key=lambda a: (a != "none", a))  # none, adapt, calibrate K, fine-tune K
    keys = sorted({(r["model"], r["scanner"]) for r in rows})
    header = ["model", "scanner", "images scored"] + [f"{a}: F1 at threshold" for a in arms] + ["best F1"]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for model, scanner in keys:
        mine = [r for r in rows if r["model"] == model and r["scanner"] == scanner]
        cells = []
        for a in arms:
            f = [r["f1"] for r in mine if r["arm"] == a]
            t = [r["threshold"] for r in mine if r["arm"] == a]
            own = [r["arm_best_f1"] for r in mine if r["arm"] == a and "arm_best_f1" in r]
            cells.append(_mean_range(f) + (f" at {statistics.mean(t):.2f}" if t else "") + (f"; own best {statistics.mean(own):.3f}" if own else ""))
        best = [r["best_f1"] for r in mine if r["arm"] == "none"]
        lines.append("| " + " | ".join([model, md_text(scanner), str(mine[0]["images"])] + cells + [_mean_range(best)]) + " |")
    lines.append("")
    return lines


def arm_means(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per model and arm: F1 and gap to the best, averaged over shifted scanners and seeds."""
    out: dict[str, dict[str, float]] = {}
    for r in rows:
        key = f"{r['model']} {r['arm']}"
        out.setdefault(key, {"f1": [], "gap": []})  # type: ignore[dict-item]
        out[key]["f1"].append(r["f1"])  # type: ignore[union-attr]
        out[key]["gap"].append(r["best_f1"] - r["f1"])  # type: ignore[union-attr]
    return {k: {"f1": statistics.mean(v["f1"]), "gap": statistics.mean(v["gap"]), "n": len(v["f1"])} for k, v in out.items()}  # type: ignore[arg-type]


def _mean_range(values: list[float]) -> str:
    if not values:
        return "n/a"
    m = statistics.mean(values)
    return f"{m:.3f}" if len(values) == 1 else f"{m:.3f} ({min(values):.3f}-{max(values):.3f})"
