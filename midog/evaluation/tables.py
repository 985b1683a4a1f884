"""Computing an evaluation and its tables, with no drawing: the official counts per
image, per-scanner rows with bootstrap 95% confidence intervals, the threshold sweep
behind the curves, and the tables as metrics.json, Markdown and CSV.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import atomic_path
from ..config import MIDOG_SCANNERS
from . import ap as ap_mod
from .io import Candidates
from .markdown import md_text
from .metrics import DetectionScore, case_entry, rates, score_cases, totals

ALL = "all"
METRICS = ("precision", "recall", "f1_score", "AP")


@dataclass
class GroupResult:
    """One row of the table: a scanner, or all images."""

    name: str
    images: list[str]
    tp: int
    fp: int
    fn: int
    values: dict[str, float | None]  # precision, recall, f1_score, AP, AUCPR
    ci95: dict[str, tuple[float, float] | None] = field(default_factory=dict)
    bootstrap_f1: np.ndarray = field(default_factory=lambda: np.zeros(0))


@dataclass
class Evaluation:
    scores: dict[str, DetectionScore]
    skipped: list[str]
    groups: list[GroupResult]  # scanners, then "all" last
    sweep: ap_mod.Sweep
    threshold: float | None  # --threshold, or None for the container's own names
    operating_threshold: float | None  # the threshold the detections correspond to, if one does
    n_bootstrap: int
    seed: int

    @property
    def all(self) -> GroupResult:
        return self.groups[-1]

    @property
    def ranked(self) -> bool:
        """False when every candidate has one probability (2021-style files): then the
        curves are single points and AP/AUCPR carry no ranking information."""
        return len(self.sweep.thresholds) > 1


UNRANKED_NOTE = "all candidates share one probability: no ranking, curves are single points"


def _scanner_order(scanners: set[str]) -> list[str]:
    known = [s for s in MIDOG_SCANNERS if s in scanners]
    return known + sorted(scanners - set(known))


def _operating_threshold(candidates: Mapping[str, Candidates], threshold: float | None) -> float | None:
    if threshold is not None:
        return threshold
    # By names: the container's threshold is the lowest "mitotic figure" probability, provided
    # every "non-mitotic figure" lies below it (else its names follow no single threshold).
    named = [c.probability[c.named_mitotic] for c in candidates.values()]
    other = [c.probability[~c.named_mitotic] for c in candidates.values()]
    named = np.concatenate(named + [np.zeros(0)])
    other = np.concatenate(other + [np.zeros(0)])
    if not len(named) or (len(other) and other.max() >= named.min()):
        return None
    return float(named.min())


def _ci(samples: np.ndarray) -> tuple[float, float] | None:
    samples = samples[np.isfinite(samples)]
    if not len(samples):
        return None
    lo, hi = np.percentile(samples, [2.5, 97.5])
    return float(lo), float(hi)


def _bootstrap(
    group: GroupResult,
    counts: np.ndarray,
    matches: list[ap_mod.ImageMatches],
    n: int,
    rng: np.random.Generator,
) -> None:
    """Resample the group's images with replacement; 95% percentile intervals."""
    if n <= 0 or not len(counts):
        return
    idx = rng.integers(0, len(counts), size=(n, len(counts)))
    p, r, f1 = ap_mod.curve(counts[idx].sum(axis=1))
    aps = np.full(n, np.nan)
    for b, row in enumerate(idx):
        value = ap_mod.average_precision([matches[i] for i in row])
        if value is not None:
            aps[b] = value
    group.bootstrap_f1 = f1
    group.ci95 = {"precision": _ci(p), "recall": _ci(r), "f1_score": _ci(f1), "AP": _ci(aps)}


def evaluate(
    ground_truth: Mapping[str, np.ndarray],
    predictions: Mapping[str, Candidates],
    domains: Mapping[str, str] | None = None,
    threshold: float | None = None,
    count_missing: bool = False,
    n_bootstrap: int = 1000,
    seed: int = 0,
) -> Evaluation:
    """Score `predictions` (keyed by ground-truth image name) by the official rules.

    F1 uses the detections (probability >= threshold, or the names when threshold is None);
    AP, AUCPR and the curves use every candidate. Images without a prediction entry are
    skipped, or with `count_missing` scored as predicting nothing.
    """
    detections = {n: c.points[c.detection_mask(threshold)] for n, c in predictions.items() if n in ground_truth}
    scores, skipped = score_cases(ground_truth, detections, count_missing)
    scored = list(scores)
    candidates = {n: predictions.get(n, Candidates.empty()) for n in scored}

    thresholds = ap_mod.sweep_thresholds(candidates.values())
    operating = _operating_threshold(candidates, threshold)
    if operating is not None:
        thresholds = np.union1d(thresholds, [operating])
    sweep = ap_mod.sweep(ground_truth, candidates, thresholds)
    matches = {
        n: ap_mod.match_image(ground_truth[n], c.points, c.probability) for n, c in candidates.items()
    }

    members: list[tuple[str, list[str]]] = []
    if domains is not None:
        for scanner in _scanner_order({domains[n] for n in scored}):
            members.append((scanner, [n for n in scored if domains[n] == scanner]))
    members.append((ALL, scored))

    groups = []
    rngs = [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(len(members))]
    for (name, images), rng in zip(members, rngs):
        tp, fp, fn = totals(scores[n] for n in images)
        p, r, _ = ap_mod.curve(sweep.totals(images))
        values = {
            **rates(tp, fp, fn),
            "AP": ap_mod.average_precision(matches[n] for n in images),
            "AUCPR": ap_mod.aucpr(p, r),
        }
        group = GroupResult(name, images, tp, fp, fn, values)
        counts = np.array([[scores[n].true_positives, scores[n].false_positives, scores[n].false_negatives] for n in images])
        counts = counts.reshape(-1, 3)  # also when the group is empty
        _bootstrap(group, counts, [matches[n] for n in images], n_bootstrap, rng)
        groups.append(group)
    return Evaluation(scores, skipped, groups, sweep, threshold, operating, n_bootstrap, seed)


def _group_entry(g: GroupResult) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "images": len(g.images),
        "true_positives": g.tp,
        "false_positives": g.fp,
        "false_negatives": g.fn,
        **g.values,
    }
    for metric in METRICS:
        ci = g.ci95.get(metric)
        entry[f"{metric}_ci95"] = list(ci) if ci else None
    return entry


def metrics_dict(ev: Evaluation) -> dict[str, Any]:
    """metrics.json: the official evaluator's {"case": ..., "aggregates": ...} plus extras
    (AP, AUCPR, confidence intervals, per-scanner results) inside "aggregates"."""
    aggregates = _group_entry(ev.all)
    aggregates.update(
        {
            "detections": "probability >= threshold" if ev.threshold is not None else 'name != "non-mitotic figure"',
            "threshold": ev.threshold,
            "operating_threshold": ev.operating_threshold,
            "skipped_images": ev.skipped,
            "bootstrap": {"resamples": ev.n_bootstrap, "seed": ev.seed},
            "scanners": {g.name: _group_entry(g) for g in ev.groups[:-1]},
        }
    )
    return {"case": {n: case_entry(s) for n, s in ev.scores.items()}, "aggregates": aggregates}


def format_value(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def format_ci(ci: tuple[float, float] | None) -> str:
    return "n/a" if ci is None else f"[{ci[0]:.3f}, {ci[1]:.3f}]"


TABLE_HEADER = ["Scanner", "Images", "Mitotic figures", "TP", "FP", "FN", "Precision", "Recall", "F1", "F1 95% CI", "AP", "AP 95% CI", "AUCPR"]


def table_markdown(ev: Evaluation) -> str:
    rows = [TABLE_HEADER, ["---"] + ["---:"] * (len(TABLE_HEADER) - 1)]
    for g in ev.groups:
        v = g.values
        rows.append(
            [
                "**all**" if g.name == ALL else md_text(g.name),
                str(len(g.images)),
                str(g.tp + g.fn),
                str(g.tp),
                str(g.fp),
                str(g.fn),
                format_value(v["precision"]),
                format_value(v["recall"]),
                format_value(v["f1_score"]),
                format_ci(g.ci95.get("f1_score")),
                format_value(v["AP"]),
                format_ci(g.ci95.get("AP")),
                format_value(v["AUCPR"]),
            ]
        )
    return "\n".join("| " + " | ".join(r) + " |" for r in rows) + "\n"


def write_table_csv(ev: Evaluation, path: Path) -> None:
    header = ["scanner", "images", "mitotic_figures", "true_positives", "false_positives", "false_negatives"]
    header += ["precision", "recall", "f1_score", "AP", "AUCPR"]
    header += [f"{m}_ci95_{end}" for m in METRICS for end in ("low", "high")]
    with atomic_path(path) as tmp, tmp.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        for g in ev.groups:
            row: list[Any] = [g.name, len(g.images), g.tp + g.fn, g.tp, g.fp, g.fn]
            row += ["" if g.values[k] is None else g.values[k] for k in ("precision", "recall", "f1_score", "AP", "AUCPR")]
            for m in METRICS:
                ci = g.ci95.get(m)
                row += list(ci) if ci else ["", ""]
            w.writerow(row)
