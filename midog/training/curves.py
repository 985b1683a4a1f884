"""The training curves of a run's log (`curves.png`): losses on a log scale, and the
validation scores, alpha and threshold per epoch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..atomic import atomic_path


def plot_log(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ep = [r["epoch"] for r in rows]
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    for key in ("train_loss", "train_det", "train_dom", "val_det", "val_dom"):
        pts = [(e, r[key]) for e, r in zip(ep, rows) if key in r]
        if pts:
            a.plot(*zip(*pts), label=key, marker=".")
    a.set_xlabel("epoch"), a.set_ylabel("loss"), a.set_yscale("log"), a.legend()
    for key in ("aucpr", "f1", "mean_f1", "threshold", "alpha"):
        pts = [(e, r[key]) for e, r in zip(ep, rows) if key in r]
        if pts:
            b.plot(*zip(*pts), label=key, marker=".")
    b.set_xlabel("epoch"), b.set_ylim(0, 1.02), b.legend()
    fig.tight_layout()
    with atomic_path(path, keep_extension=True) as tmp:
        fig.savefig(tmp, dpi=90)
    plt.close(fig)
