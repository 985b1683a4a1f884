"""Figures of the experiment report: bootstrap F1 per scanner and model, F1 against
threshold per scanner, training curves, the UMAPs side by side. Everything drawn is
computed in `experiment` and `evaluation`; nothing here changes a number."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import atomic_path

MODEL_COLOURS = {"weak": "tab:orange", "strong": "tab:blue", "da": "tab:green"}


def _figure(width: float, height: float):  # -> matplotlib Figure
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=110, layout="constrained")


def _save(fig: Any, path: Path) -> Path:
    with atomic_path(path, keep_extension=True) as tmp:
        fig.savefig(tmp)
    return path


def plot_bootstrap(results: list, scanners: list[str], labels: dict[str, str], path: Path) -> Path:
    """Violins of the bootstrapped F1 of each scanner (Figure 3a), one per model."""
    fig = _figure(max(6.0, 1.6 * len(scanners) + 2), 4.2)
    ax = fig.add_subplot()
    n = len(results)
    width = 0.8 / max(n, 1)
    for j, r in enumerate(results):
        groups = {g.name: g for g in r.evaluation.groups}
        data, pos = [], []
        for i, sc in enumerate(scanners):
            f1 = groups[sc].bootstrap_f1 if sc in groups else np.zeros(0)
            f1 = f1[np.isfinite(f1)]
            if len(f1):
                data.append(f1)
                pos.append(i + (j - (n - 1) / 2) * width)
        if data:
            parts = ax.violinplot(data, positions=pos, widths=width * 0.9, showmedians=True)
            for body in parts["bodies"]:
                body.set_facecolor(MODEL_COLOURS.get(r.model, "grey"))
                body.set_alpha(0.6)
        ax.plot([], [], color=MODEL_COLOURS.get(r.model, "grey"), lw=6, alpha=0.6, label=r.model)
    ax.set_xticks(range(len(scanners)), [labels.get(s, s) for s in scanners], rotation=20, ha="right", fontsize=8)
    ax.set(ylabel="F1 (bootstrap over images)", ylim=(0, 1.02), title="Bootstrapped F1 per scanner and model")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def f1_by_threshold(ev: Any, scanner: str) -> tuple[np.ndarray, np.ndarray]:
    """(thresholds, F1) of one scanner (or "all") over the evaluation's sweep."""
    from ..evaluation.ap import curve

    group = next(g for g in ev.groups if g.name == scanner)
    return ev.sweep.thresholds, curve(ev.sweep.totals(group.images))[2]


def plot_f1_threshold(results: list, scanners: list[str], labels: dict[str, str], path: Path) -> Path:
    """F1 against threshold on the held-out images, one panel per scanner; the dashed
    line is each model's operating point, chosen on validation."""
    cols = min(3, len(scanners))
    rows = -(-len(scanners) // cols)
    fig = _figure(4.0 * cols, 3.0 * rows)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, sc in zip(axes, scanners):
        for r in results:
            t, f1 = f1_by_threshold(r.evaluation, sc)
            colour = MODEL_COLOURS.get(r.model, "grey")
            ax.plot(t, f1, color=colour, lw=1.3, label=r.model)
            ax.axvline(r.validation.chosen, color=colour, ls="--", lw=0.9)
        ax.set(title=labels.get(sc, sc), xlim=(0, 1), ylim=(0, 1.02), xlabel="threshold", ylabel="F1")
        ax.title.set_fontsize(9)
        ax.grid(alpha=0.3)
    for ax in axes[len(scanners):]:
        ax.set_visible(False)
    axes[0].legend(fontsize=7)
    return _save(fig, path)


CURVES = (
    ("detection loss", ("train_det", "val_det")),
    ("domain loss", ("train_dom", "val_dom")),
    ("GRL alpha", ("alpha",)),
    ("validation AUCPR", ("aucpr",)),
)


def plot_curves(results: list, path: Path) -> Path:
    """Training curves of every model: detection loss, domain loss, alpha, validation AUCPR
    (solid: training, dotted: validation)."""
    fig = _figure(13.0, 3.4)
    axes = fig.subplots(1, len(CURVES))
    for ax, (title, keys) in zip(axes, CURVES):
        for r in results:
            colour = MODEL_COLOURS.get(r.model, "grey")
            for key in keys:
                pts = [(row["epoch"], row[key]) for row in r.rows if row.get(key) is not None]
                if pts:
                    ls = ":" if key.startswith("val") else "-"
                    ax.plot(*zip(*pts), ls=ls, marker=".", color=colour, label=f"{r.model} s{r.seed} {key}")
        ax.set(title=title, xlabel="epoch")
        ax.grid(alpha=0.3)
    if axes[0].get_legend_handles_labels()[0]:
        axes[0].legend(fontsize=6)
    return _save(fig, path)
