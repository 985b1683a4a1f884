"""Evaluate a set of predictions and write what people expect to see: the official
metrics.json, a per-scanner table like the MIDOG paper's Table 1 with bootstrap 95%
confidence intervals, precision-recall / F1-threshold / bootstrap plots and a report.md.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from ..atomic import write_text_atomic
from .plots import plot_bootstrap, plot_f1_threshold, plot_pr_curves
from .tables import UNRANKED_NOTE, Evaluation, metrics_dict, table_markdown, write_table_csv

PLOTS = {
    "pr_curve.png": "Precision-recall curves (threshold sweep, official matching)",
    "f1_threshold.png": "F1 against the probability threshold",
    "bootstrap_f1.png": "Bootstrap distributions of F1",
}


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
    write_text_atomic(paths["metrics.json"], json.dumps(metrics_dict(ev), indent=2) + "\n")
    write_text_atomic(paths["table.md"], table_markdown(ev))
    write_table_csv(ev, paths["table.csv"])
    plot_pr_curves(ev, paths["pr_curve.png"])
    plot_f1_threshold(ev, paths["f1_threshold.png"])
    plot_bootstrap(ev, paths["bootstrap_f1.png"])
    write_text_atomic(paths["report.md"], report_markdown(ev, sources or {}))
    return list(paths.values())
