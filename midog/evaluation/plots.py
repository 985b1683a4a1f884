"""Drawing an evaluation: precision-recall curves, F1 against threshold and the
bootstrap distributions of F1. Everything drawn is computed in `tables`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import atomic_path
from . import ap as ap_mod
from .tables import ALL, UNRANKED_NOTE, Evaluation, format_ci, format_value


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
        label = f"{g.name}: AUCPR {format_value(g.values['AUCPR'])}, AP {format_value(g.values['AP'])}"
        ax.plot(r[ok], p[ok], "-o" if few else "-", ms=3, lw=2.2 if g.name == ALL else 1.4, color=colours[g.name], label=label)
        if g.values["precision"] is not None and g.values["recall"] is not None:
            ax.plot(g.values["recall"], g.values["precision"], "D", ms=8, mec="white", color=colours[g.name])
    ax.plot([], [], "D", color="grey", mec="white", label="operating point")
    title = "Precision-recall (threshold sweep)" + ("" if ev.ranked else f"\n({UNRANKED_NOTE})")
    ax.set(xlim=(0, 1.02), ylim=(0, 1.02), xlabel="Recall", ylabel="Precision", title=title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    with atomic_path(path, keep_extension=True) as tmp:
        fig.savefig(tmp)


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
    with atomic_path(path, keep_extension=True) as tmp:
        fig.savefig(tmp)


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
        ax.set_title(f"{g.name}: F1 {format_value(g.values['f1_score'])} {format_ci(ci)}", fontsize=9)
        ax.set_xlabel("F1")
        ax.set_ylabel("resamples")
    fig.suptitle(f"Bootstrap of F1 ({ev.n_bootstrap} resamples of images; red: estimate, dashed: 95% CI)", fontsize=10)
    with atomic_path(path, keep_extension=True) as tmp:
        fig.savefig(tmp)
