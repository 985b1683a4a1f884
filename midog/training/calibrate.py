"""The operating point from a few reviewed images of one scanner (`midog calibrate`).

A scanner unlike the training scanners mostly moves the detector's scores, not their
order: at its own best threshold the model may still be right, while the threshold stored
in the weights cuts half its figures. Given the 2022-style predictions of some images and
their reviewed ground truth, this sweeps F1 against the threshold (the official matching),
picks a threshold by a rule, puts a bootstrap interval on the F1 there, and writes a copy
of the weights whose recorded operating point is the new one.

The bootstrap works on the reviewed items themselves: every reviewed mitotic figure has
the highest threshold at which it is still found, every false detection its score. The
swept curve is exactly reproduced by those items, so resampling them (figures and false
detections separately) shows how much the curve, and the F1 at the chosen threshold,
depend on which figures happened to be reviewed. Two images give a few dozen figures; the
report says how wide that leaves the interval.

Rules (measured on held-out images of the same scanners; BENCHMARKS.md, "Calibrating the
operating point"): `plateau` is the experiment's middle of the near-best plateau,
`argmax` the best F1 (middle of ties), `smoothed` the best of F1 averaged over +-0.05,
`bagged` the best of the bootstrap-mean F1 curve, `bagged-plateau` the middle of the
plateau within 0.01 of the bootstrap-mean curve's best, and `jittered` (the default) the
same on the F1 curve of the expected counts when every reviewed item's score moves by a
normal step of 1.0 in logit space (like the mean curve of a smoothed bootstrap, without
its resampling noise).

Why jittered: on two reviewed images F1 is often exactly 1 over a wide range of
thresholds, between the highest-scoring false detection and the lowest-scoring figure,
and the plain bootstrap cannot say where in that gap to stand (it only redraws the same
scores). The next slides' look-alikes and figures will not score exactly where these did;
moving every score a little shows which edge of the gap is the crowded one, the side from
which the next slide's errors come, and the rule stands further from it. Held-out, over
every reviewed pair of every scanner, it about halved the mean gap to the held-out images'
best F1 against bagged-plateau (the default before it), on the data its step was chosen
on and on two fresh data seeds; with four reviewed images the two were about even.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import MidogError
from ..evaluation.io import Candidates

GRID = np.round(np.arange(0.05, 1.0, 0.01), 2)
RULES = ("jittered", "bagged-plateau", "bagged", "argmax", "plateau", "smoothed")
DEFAULT_RULE = "jittered"
BAGGED_PLATEAU_TOLERANCE = 0.01  # bootstrap-mean F1 this close to its best is the plateau
# The jittered rule's step (sd, logit units) by which each reviewed item's score moves.
# Chosen on data seed 1 among 0.25, 0.5, 0.75, 1.0, 1.5 (BENCHMARKS.md, "Calibrating").
JITTER_LOGIT = 1.0
SMOOTH_HALF_WIDTH = 5  # grid steps: +-0.05 in threshold
TRUSTED_HALF_WIDTH = 0.05  # an F1 interval narrower than +-0.05 is called enough to trust
MIN_FIGURES = 30  # fewer reviewed figures than this always earns the warning


@dataclass
class Reviewed:
    """Ground truth and candidates of the reviewed images, keyed by ground-truth image name."""

    ground_truth: dict[str, np.ndarray]
    candidates: dict[str, Candidates]
    floor: float  # lowest threshold the prediction files can show (their candidate floor)
    ignored: list[str] = field(default_factory=list)  # prediction files of images not reviewed


def read_reviewed(
    predictions: dict[str, Candidates], probabilities_given: dict[str, bool], ground_truth: dict[str, np.ndarray],
    recorded_floor: float | None, where: str,
) -> Reviewed:
    """Match prediction files (by image stem) to the reviewed images and check that they
    can move the threshold: 2021-style files (points without probabilities) cannot."""
    from ..evaluation.io import image_stem

    by_stem = {image_stem(n): n for n in ground_truth}
    missing = sorted(n for s, n in by_stem.items() if s not in predictions)
    if missing:
        raise MidogError(f"{where}: no prediction file for reviewed image(s) {', '.join(missing[:10])} (<image stem>.json)")
    flat = sorted(s for s in by_stem if not probabilities_given[s])
    if flat:
        raise MidogError(
            f"{where}/{flat[0]}.json: 2021-style predictions (points without probabilities) list only what lay above "
            "the old operating point, so they cannot show where a lower threshold would land; detect the reviewed "
            "images again with `midog detect --style 2022` (candidates below the operating point, with probabilities)"
        )
    cands = {by_stem[s]: predictions[s] for s in by_stem}
    probs = np.concatenate([c.probability for c in cands.values()] + [np.zeros(0)])
    # Below the files' candidate floor F1 looks flat only because nothing was written there.
    observed = float(probs.min()) if len(probs) else 1.0
    floor = recorded_floor if recorded_floor is not None else observed
    return Reviewed({n: ground_truth[n] for n in cands}, cands, floor, sorted(s for s in predictions if s not in by_stem))


def _middle_of_best(values: np.ndarray) -> int:
    v = np.nan_to_num(np.asarray(values, float), nan=-1.0)
    best = np.flatnonzero(v >= v.max() - 1e-12)
    return int(best[len(best) // 2])


def smooth(f1: np.ndarray, half_width: int = SMOOTH_HALF_WIDTH) -> np.ndarray:
    """F1 averaged over a window of +-half_width grid steps (shrinking at the ends)."""
    f = np.nan_to_num(np.asarray(f1, float), nan=0.0)
    c = np.concatenate([[0.0], np.cumsum(f)])
    i = np.arange(len(f))
    lo, hi = np.maximum(i - half_width, 0), np.minimum(i + half_width + 1, len(f))
    return (c[hi] - c[lo]) / (hi - lo)


def choose(rule: str, f1: np.ndarray, bootstrap_mean: np.ndarray | None = None, tolerance: float = 0.02) -> int:
    """Index into the threshold grid that `rule` picks from the F1 curve."""
    from .experiment import plateau_threshold

    if rule == "argmax":
        return _middle_of_best(f1)
    if rule == "plateau":
        return plateau_threshold(np.arange(len(f1)), f1, tolerance)
    if rule == "smoothed":
        return _middle_of_best(smooth(f1))
    if rule == "bagged":
        if bootstrap_mean is None:
            raise ValueError("the bagged rule needs the bootstrap-mean curve")
        return _middle_of_best(bootstrap_mean)
    if rule in ("bagged-plateau", "jittered"):
        if bootstrap_mean is None:
            raise ValueError(f"the {rule} rule needs the bootstrap-mean curve")
        return plateau_threshold(np.arange(len(bootstrap_mean)), bootstrap_mean, BAGGED_PLATEAU_TOLERANCE)
    raise MidogError(f"--rule: unknown rule {rule!r}; choose from {', '.join(RULES)}")


@dataclass(frozen=True)
class Items:
    """The reviewed items behind a swept curve: per figure the number of grid thresholds at
    which it is found, per false detection the number at which it is detected."""

    figure_levels: np.ndarray  # (n_figures,) in 0..T
    false_levels: np.ndarray  # (n_false,) in 0..T
    n_thresholds: int

    @staticmethod
    def from_counts(counts: np.ndarray) -> "Items":
        """From (T, 3) TP/FP/FN totals on an ascending grid. TP and FP never rise with the
        threshold under a greedy matching, except by a rematch; the envelope absorbs that."""
        tp = np.maximum.accumulate(counts[::-1, 0])[::-1]
        fp = np.maximum.accumulate(counts[::-1, 1])[::-1]
        n_fig = int(counts[0, 0] + counts[0, 2])
        # Figure k (k = 0, 1, ...) is found at the first level(k) thresholds: tp[i] > k.
        fig = np.array([int(np.sum(tp > k)) for k in range(n_fig)], np.int64)
        fal = np.array([int(np.sum(fp > k)) for k in range(int(fp[0]))], np.int64)
        return Items(fig, fal, len(counts))

    def curves(self, fig_hist: np.ndarray, fal_hist: np.ndarray, found: np.ndarray | None = None) -> np.ndarray:
        """F1 curves (B, T) from histograms (B, T + 1) of item levels; with `found`, the
        (T + 1, T) chance that an item of each level is found at each threshold, of the
        expected counts."""
        if found is None:
            tp = np.cumsum(fig_hist[:, ::-1], 1)[:, ::-1][:, 1:]
            fp = np.cumsum(fal_hist[:, ::-1], 1)[:, ::-1][:, 1:]
        else:
            tp, fp = fig_hist @ found, fal_hist @ found
        fn = fig_hist.sum(1, keepdims=True) - tp
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(2 * tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), np.nan)

    def histograms(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """(n, T + 1) level histograms of bootstrap resamples (figures and false detections
        each drawn with replacement, their numbers kept)."""
        t = self.n_thresholds + 1

        def draws(levels: np.ndarray) -> np.ndarray:
            if not len(levels):
                return np.zeros((n, t), np.int64)
            p = np.bincount(levels, minlength=t) / len(levels)
            return rng.multinomial(len(levels), p, size=n)

        return draws(self.figure_levels), draws(self.false_levels)

    def resample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """(n, T) F1 curves of bootstrap resamples."""
        return self.curves(*self.histograms(n, rng))

    def jittered_f1(self, grid: np.ndarray, jitter: float = JITTER_LOGIT) -> np.ndarray:
        """F1 on `grid` (the thresholds the levels count) of the expected counts when every
        item's score moves by a normal step of sd `jitter` in logit space."""
        hist = lambda levels: np.bincount(levels, minlength=self.n_thresholds + 1)[None]  # noqa: E731
        return self.curves(hist(self.figure_levels), hist(self.false_levels), jittered_found(grid, jitter))[0]


def jittered_found(grid: np.ndarray, jitter: float = JITTER_LOGIT) -> np.ndarray:
    """(T + 1, T): the chance that an item of level l (found at grid[l - 1], not at grid[l])
    is found at each threshold once its score moves by a normal step of sd `jitter` in logit
    space. Level 0 (below the lowest threshold, where it lies is unknown) stays unfound."""
    from scipy.special import ndtr

    upper = np.append(grid, 1.0)
    levels = np.arange(1, len(grid) + 1)
    score = (upper[levels - 1] + upper[np.minimum(levels, len(grid))]) / 2
    logit = lambda v: np.log(v / (1 - v))  # noqa: E731
    found = ndtr((logit(score)[:, None] - logit(grid)[None, :]) / jitter)
    return np.vstack([np.zeros((1, len(grid))), found])


def select(
    items: Items, f1: np.ndarray, rule: str, n_bootstrap: int, rng: np.random.Generator, tolerance: float = 0.02,
    grid: np.ndarray | None = None,
) -> tuple[int, np.ndarray, np.ndarray]:
    """The rule's grid index on a swept curve (thresholds `grid`, needed by the jittered
    rule), with the bootstrap curves and their mean."""
    boot = items.resample(max(n_bootstrap, 1), rng)
    if rule == "jittered":
        if grid is None:
            raise ValueError("the jittered rule needs the threshold grid")
        # Only the choice uses the moved scores: the interval stays the plain bootstrap's,
        # which asks which figures happened to be reviewed, not where they might score.
        mean = np.nan_to_num(items.jittered_f1(grid), nan=0.0)
        return choose(rule, f1, mean, tolerance), boot, mean
    mean = np.nan_to_num(boot, nan=0.0).mean(0)
    return choose(rule, f1, mean, tolerance), boot, mean


@dataclass
class Calibration:
    rule: str
    thresholds: np.ndarray  # the grid from the candidate floor up
    f1: np.ndarray  # pooled F1 of the reviewed images on the grid
    per_image_f1: dict[str, np.ndarray]
    threshold: float
    f1_at_threshold: float
    ci95: tuple[float, float]  # bootstrap interval of F1 at `threshold`
    threshold_ci95: tuple[float, float]  # where the rule lands on the resamples
    previous: float | None  # the operating point the weights recorded
    f1_at_previous: float | None
    n_figures: int
    n_false: int
    images: list[str]
    floor: float
    warnings: list[str]
    n_bootstrap: int

    @property
    def half_width(self) -> float:
        return (self.ci95[1] - self.ci95[0]) / 2

    def figures_for_trust(self) -> int:
        """Reviewed figures that would narrow the interval to +-TRUSTED_HALF_WIDTH (the width
        shrinks about as 1/sqrt(figures))."""
        if not self.half_width or not self.n_figures:
            return self.n_figures
        return int(math.ceil(self.n_figures * (self.half_width / TRUSTED_HALF_WIDTH) ** 2))

    def record(self) -> dict[str, Any]:
        """What OUT.pth's metadata and calibration.json keep."""
        return {
            "rule": self.rule, "threshold": self.threshold, "previous_threshold": self.previous,
            "f1": self.f1_at_threshold, "f1_ci95": list(self.ci95), "threshold_ci95": list(self.threshold_ci95),
            "f1_at_previous": self.f1_at_previous, "figures": self.n_figures, "false_detections": self.n_false,
            "images": self.images, "candidate_floor": self.floor, "bootstrap": self.n_bootstrap, "warnings": self.warnings,
        }


def calibrate(
    reviewed: Reviewed, previous: float | None, rule: str = DEFAULT_RULE, n_bootstrap: int = 2000, seed: int = 0,
    tolerance: float = 0.02,
) -> Calibration:
    """Choose the operating point on the reviewed images."""
    from ..evaluation.ap import curve, sweep

    if rule not in RULES:
        raise MidogError(f"--rule: unknown rule {rule!r}; choose from {', '.join(RULES)}")
    grid = GRID[GRID >= math.floor(reviewed.floor * 100 + 1e-9) / 100 - 1e-9]
    if reviewed.floor > GRID[0] + 1e-9:
        grid = grid[grid >= reviewed.floor - 1e-9]  # only where the files hold every candidate
    if not len(grid):
        raise MidogError(f"the prediction files hold no candidate below {reviewed.floor:.2f}: no threshold left to sweep")
    sw = sweep(reviewed.ground_truth, reviewed.candidates, grid)
    counts = sw.totals(reviewed.candidates)
    f1 = curve(counts)[2]
    items = Items.from_counts(counts)
    if not len(items.figure_levels):
        raise MidogError("the reviewed images hold no mitotic figure: F1 is undefined, no operating point can be chosen")
    i, boot, mean = select(items, f1, rule, n_bootstrap, np.random.default_rng(seed), tolerance, grid)
    # Where the rule lands on resampled items: how firmly the data fix the threshold (the
    # jittered rule itself on each resample; for the bagged rules, whose own resampling
    # would need a bootstrap inside the bootstrap, argmax's and plateau's).
    if rule == "jittered":
        moved = items.curves(*items.histograms(min(max(n_bootstrap, 1), 500), np.random.default_rng(seed + 1)), jittered_found(grid))
        picks = np.array([choose(rule, f, np.nan_to_num(f, nan=0.0)) for f in moved])
    else:
        proxy = {"bagged": "argmax", "bagged-plateau": "plateau"}.get(rule, rule)
        picks = np.array([choose(proxy, b, tolerance=tolerance) for b in boot[:500]])
    at = np.nan_to_num(boot[:, i], nan=0.0)
    ci = (float(np.percentile(at, 2.5)), float(np.percentile(at, 97.5))) if n_bootstrap > 0 else (float(f1[i]), float(f1[i]))
    ci = (min(ci[0], error_free_bound(*counts[i])), ci[1])
    t_ci = (float(grid[np.percentile(picks, 2.5, method="lower")]), float(grid[np.percentile(picks, 97.5, method="higher")]))
    f1_prev = None
    if previous is not None and previous >= grid[0] - 1e-9:
        at_previous = sweep(reviewed.ground_truth, reviewed.candidates, np.array([previous])).totals(reviewed.candidates)
        f1_prev = float(np.nan_to_num(curve(at_previous)[2][0]))
    per_image = {n: curve(sw.counts[n])[2] for n in reviewed.candidates}
    cal = Calibration(
        rule, grid, f1, per_image, float(grid[i]), float(np.nan_to_num(f1[i])), ci, t_ci, previous, f1_prev,
        len(items.figure_levels), len(items.false_levels), sorted(reviewed.candidates), reviewed.floor, [], n_bootstrap,
    )
    cal.warnings = trust_warnings(cal)
    return cal


def error_free_bound(tp: int, fp: int, fn: int) -> float:
    """A lower 95% bound on F1 when the reviewed images show no error of a kind, where the
    bootstrap cannot (resampling no misses gives no misses): the rule of three, a missed
    share below 3 / n after n figures without a miss (and likewise for false detections)."""
    tp, fp, fn = int(tp), int(fp), int(fn)
    recall = 1 - 3 / (tp + fn) if fn == 0 and tp + fn else (tp / (tp + fn) if tp + fn else 0.0)
    precision = 1 - 3 / (tp + fp) if fp == 0 and tp + fp else (tp / (tp + fp) if tp + fp else 0.0)
    recall, precision = max(recall, 0.0), max(precision, 0.0)
    return float(2 * precision * recall / (precision + recall)) if precision + recall else 0.0


def trust_warnings(cal: Calibration) -> list[str]:
    out = []
    if cal.n_figures < MIN_FIGURES or cal.half_width > TRUSTED_HALF_WIDTH:
        out.append(
            f"too few reviewed figures to trust: {cal.n_figures} mitotic figures in {len(cal.images)} image(s) leave "
            f"the 95% interval of F1 at {cal.threshold:.2f} at {cal.ci95[0]:.2f}-{cal.ci95[1]:.2f} (+-{cal.half_width:.2f}); "
            f"about {max(cal.figures_for_trust(), MIN_FIGURES)} reviewed figures would narrow it to +-{TRUSTED_HALF_WIDTH:.2f}"
        )
    if cal.threshold <= cal.thresholds[0] + 1e-9 or cal.threshold_ci95[0] <= cal.thresholds[0] + 1e-9:
        out.append(
            f"the F1 curve is cut at {cal.thresholds[0]:.2f}, the lowest candidate the prediction files hold, and the "
            "choice reaches it: the best threshold may lie lower; detect the reviewed images again with a lower "
            "candidate floor (`midog detect --style 2022 --threshold 0.1`) and calibrate again"
        )
    return out


def calibrated_weights(src: str | Path, dst: str | Path, cal: Calibration, source_sha256: str | None) -> Path:
    """A copy of `src` whose recorded operating point (meta["threshold"], what `midog detect`
    and process.py read) is the calibrated one; tensors are copied unchanged."""
    from ..network.retinanet import read_state_dict
    from .checkpoints import atomic_save, code_version

    state, meta = read_state_dict(src)
    history = list(meta.get("calibrations", []))
    # Through JSON: plain numbers and strings only, which torch.load(weights_only=True) reads.
    record = json.loads(json.dumps({**cal.record(), "source": str(src), "source_sha256": source_sha256, "code_version": code_version()}))
    meta = {**meta, "threshold": cal.threshold, "calibration": record, "calibrations": history + [record]}
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    atomic_save({"model": state, "meta": meta}, dst)
    return dst


@dataclass
class PredictionFolder:
    candidates: dict[str, Candidates]  # by image stem
    probabilities_given: dict[str, bool]  # False: a 2021-style file (points only)
    recorded_floor: float | None  # from the sidecars: the lowest candidate they can hold
    weights_sha256: set[str]  # of the weights that made them, where the sidecars say


def read_prediction_folder(directory: str | Path) -> PredictionFolder:
    """`read_predictions` plus what calibration must know that it drops: whether each file
    gives probabilities, and (from `midog detect`'s sidecars) its candidate floor and weights."""
    from ..config import REFERENCE
    from ..evaluation.io import read_predictions
    from ..results.reader import load_json, parse_points
    from ..results.sidecar import read_info

    directory = Path(directory)
    cands = read_predictions(directory)
    given, floors, shas = {}, [], set()
    for stem in cands:
        path = directory / f"{stem}.json"
        _, prob, _ = parse_points(load_json(path, "prediction file"), path)
        info = read_info(path)
        given[stem] = not np.isnan(prob).any() and not (info is not None and info.style == "2021")
        if info is not None:
            if info.threshold is not None:
                floors.append(min(REFERENCE.candidate_threshold, info.threshold))
            if info.weights_sha256:
                shas.add(info.weights_sha256)
    recorded = max(floors) if floors and len(floors) == len(cands) else None
    return PredictionFolder(cands, given, recorded, shas)
