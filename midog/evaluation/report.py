"""Evaluate a set of predictions and write what people expect to see: the official
metrics.json, a per-scanner table like the MIDOG paper's Table 1 with bootstrap 95%
confidence intervals, precision-recall / F1-threshold / bootstrap plots and a report.md.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..config import MIDOG_SCANNERS
from . import ap as ap_mod
from .io import Candidates
from .metrics import DetectionScore, case_entry, rates, score_cases, totals

ALL = "all"
METRICS = ("precision", "recall", "f1_score", "AP")
PLOTS = {
    "pr_curve.png": "Precision-recall curves (threshold sweep, official matching)",
    "f1_threshold.png": "F1 against the probability threshold",
    "bootstrap_f1.png": "Bootstrap distributions of F1",
}


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


# ----------------------------------------------------------------------------- outputs


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


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _fmt_ci(ci: tuple[float, float] | None) -> str:
    return "n/a" if ci is None else f"[{ci[0]:.3f}, {ci[1]:.3f}]"


TABLE_HEADER = ["Scanner", "Images", "Mitotic figures", "TP", "FP", "FN", "Precision", "Recall", "F1", "F1 95% CI", "AP", "AP 95% CI", "AUCPR"]


def table_markdown(ev: Evaluation) -> str:
    rows = [TABLE_HEADER, ["---"] + ["---:"] * (len(TABLE_HEADER) - 1)]
    for g in ev.groups:
        v = g.values
        rows.append(
            [
                "**all**" if g.name == ALL else g.name,
                str(len(g.images)),
                str(g.tp + g.fn),
                str(g.tp),
                str(g.fp),
                str(g.fn),
                _fmt(v["precision"]),
                _fmt(v["recall"]),
                _fmt(v["f1_score"]),
                _fmt_ci(g.ci95.get("f1_score")),
                _fmt(v["AP"]),
                _fmt_ci(g.ci95.get("AP")),
                _fmt(v["AUCPR"]),
            ]
        )
    return "\n".join("| " + " | ".join(r) + " |" for r in rows) + "\n"


def write_table_csv(ev: Evaluation, path: Path) -> None:
    header = ["scanner", "images", "mitotic_figures", "true_positives", "false_positives", "false_negatives"]
    header += ["precision", "recall", "f1_score", "AP", "AUCPR"]
    header += [f"{m}_ci95_{end}" for m in METRICS for end in ("low", "high")]
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        for g in ev.groups:
            row: list[Any] = [g.name, len(g.images), g.tp + g.fn, g.tp, g.fp, g.fn]
            row += ["" if g.values[k] is None else g.values[k] for k in ("precision", "recall", "f1_score", "AP", "AUCPR")]
            for m in METRICS:
                ci = g.ci95.get(m)
                row += list(ci) if ci else ["", ""]
            w.writerow(row)


def _colours(ev: Evaluation) -> dict[str, Any]:
    from matplotlib import colormaps

    tab = colormaps["tab10"]
    return {g.name: ("black" if g.name == ALL else tab(i % 10)) for i, g in enumerate(ev.groups)}


def _new_figure(width: float, height: float):  # -> matplotlib Figure
    # A bare Figure renders with Agg and touches no global pyplot state or display.
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=120, layout="constrained")


def plot_pr_curves(ev: Evaluation, path: Path) -> None:
    fig = _new_figure(6.5, 6.0)
    ax = fig.add_subplot()
    colours = _colours(ev)
    few = len(ev.sweep.thresholds) <= 30
    for g in ev.groups:
        p, r, _ = ap_mod.curve(ev.sweep.totals(g.images))
        ok = np.isfinite(p) & np.isfinite(r)
        label = f"{g.name}: AUCPR {_fmt(g.values['AUCPR'])}, AP {_fmt(g.values['AP'])}"
        ax.plot(r[ok], p[ok], "-o" if few else "-", ms=3, lw=2.2 if g.name == ALL else 1.4, color=colours[g.name], label=label)
        if g.values["precision"] is not None and g.values["recall"] is not None:
            ax.plot(g.values["recall"], g.values["precision"], "D", ms=8, mec="white", color=colours[g.name])
    ax.plot([], [], "D", color="grey", mec="white", label="operating point")
    title = "Precision-recall (threshold sweep)" + ("" if ev.ranked else f"\n({UNRANKED_NOTE})")
    ax.set(xlim=(0, 1.02), ylim=(0, 1.02), xlabel="Recall", ylabel="Precision", title=title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    fig.savefig(path)


def plot_f1_threshold(ev: Evaluation, path: Path) -> None:
    fig = _new_figure(7.5, 5.0)
    ax = fig.add_subplot()
    colours = _colours(ev)
    t = ev.sweep.thresholds
    few = len(t) <= 30
    for g in ev.groups:
        _, _, f1 = ap_mod.curve(ev.sweep.totals(g.images))
        ax.plot(t, f1, "-o" if few else "-", ms=3, lw=2.2 if g.name == ALL else 1.4, color=colours[g.name], label=g.name)
        if ev.operating_threshold is not None and g.values["f1_score"] is not None:
            ax.plot(ev.operating_threshold, g.values["f1_score"], "D", ms=8, mec="white", color=colours[g.name])
    if ev.operating_threshold is not None:
        how = "--threshold" if ev.threshold is not None else "from the names"
        ax.axvline(ev.operating_threshold, ls="--", color="grey", lw=1, label=f"operating point {ev.operating_threshold:.3f} ({how})")
    _, _, f1_all = ap_mod.curve(ev.sweep.totals(ev.all.images))
    if np.isfinite(f1_all).any():
        best = int(np.nanargmax(f1_all))
        ax.plot(t[best], f1_all[best], "*", ms=14, color="gold", mec="black", label=f"best F1 (all) {f1_all[best]:.4f} at {t[best]:.3f}")
    title = "F1 against threshold" + ("" if ev.ranked else f"\n({UNRANKED_NOTE})")
    ax.set(xlim=(0, 1.02), ylim=(0, 1.02), xlabel="Probability threshold (detection: p >= t)", ylabel="F1", title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    fig.savefig(path)


def plot_bootstrap(ev: Evaluation, path: Path) -> None:
    n = len(ev.groups)
    cols = min(3, n)
    rows = (n + cols - 1) // cols
    fig = _new_figure(4.0 * cols, 3.0 * rows)
    colours = _colours(ev)
    for i, g in enumerate(ev.groups):
        ax = fig.add_subplot(rows, cols, i + 1)
        samples = g.bootstrap_f1[np.isfinite(g.bootstrap_f1)]
        if len(samples):
            ax.hist(samples, bins=30, color=colours[g.name], alpha=0.75)
        ci = g.ci95.get("f1_score")
        if ci:
            for edge in ci:
                ax.axvline(edge, ls="--", color="black", lw=1)
        if g.values["f1_score"] is not None:
            ax.axvline(g.values["f1_score"], color="red", lw=1.5)
        ax.set_title(f"{g.name}: F1 {_fmt(g.values['f1_score'])} {_fmt_ci(ci)}", fontsize=9)
        ax.set_xlabel("F1")
        ax.set_ylabel("resamples")
    fig.suptitle(f"Bootstrap of F1 ({ev.n_bootstrap} resamples of images; red: estimate, dashed: 95% CI)", fontsize=10)
    fig.savefig(path)


def report_markdown(ev: Evaluation, sources: Mapping[str, str]) -> str:
    rule = f"probability >= {ev.threshold:g}" if ev.threshold is not None else 'the container\'s names (name != "non-mitotic figure")'
    lines = ["# MIDOG evaluation", ""]
    lines += [f"- {k}: `{v}`" for k, v in sources.items()]
    lines += [
        f"- Detections for F1: {rule}; AP, AUCPR and curves use every candidate.",
        f"- Images scored: {len(ev.scores)}; skipped (no prediction file): {len(ev.skipped)}"
        + (f" ({', '.join(ev.skipped[:10])}{', ...' if len(ev.skipped) > 10 else ''})" if ev.skipped else ""),
        "- Matching: official MIDOG 2021 rule (evalutils `score_detection`, 7.5 um); TP/FP/FN summed over images.",
        "- AP: MIDOG 2022 definition (boxes of +-0.01125 mm, IoU 0.5, COCO 101-point).",
        f"- 95% confidence intervals: {ev.n_bootstrap} bootstrap resamples of images per scanner (seed {ev.seed}).",
    ]
    if not ev.ranked:
        lines.append(f"- Note: {UNRANKED_NOTE}; AP and AUCPR are not meaningful here.")
    lines += [
        "",
        "## Results",
        "",
        table_markdown(ev),
        "Also as [table.md](table.md), [table.csv](table.csv) (with every interval) and [metrics.json](metrics.json).",
        "",
    ]
    for name, title in PLOTS.items():
        lines += [f"## {title}", "", f"![{title}]({name})", ""]
    return "\n".join(lines)


def write_outputs(ev: Evaluation, output: str | Path, sources: Mapping[str, str] | None = None) -> list[Path]:
    """Write metrics.json, table.md, table.csv, the plots and report.md; returns the paths."""
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    paths = {name: out / name for name in ("metrics.json", "table.md", "table.csv", *PLOTS, "report.md")}
    paths["metrics.json"].write_text(json.dumps(metrics_dict(ev), indent=2) + "\n")
    paths["table.md"].write_text(table_markdown(ev))
    write_table_csv(ev, paths["table.csv"])
    plot_pr_curves(ev, paths["pr_curve.png"])
    plot_f1_threshold(ev, paths["f1_threshold.png"])
    plot_bootstrap(ev, paths["bootstrap_f1.png"])
    paths["report.md"].write_text(report_markdown(ev, sources or {}))
    return list(paths.values())
