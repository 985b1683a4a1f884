"""The short report `midog calibrate` writes beside OUT.pth: what the new operating point rests
on (images, figures, the F1 curve, the bootstrap interval) and how far to trust it."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..atomic import atomic_path, write_json_atomic, write_text_atomic
from .calibrate import TRUSTED_HALF_WIDTH, Calibration


def report_paths(weights_out: str | Path) -> dict[str, Path]:
    """OUT.pth -> OUT.calibration.md / .png / .json beside it."""
    out = Path(weights_out)
    return {kind: out.with_name(f"{out.stem}.calibration.{kind}") for kind in ("md", "png", "json")}


def summary_line(cal: Calibration) -> str:
    prev = "" if cal.previous is None else f" (was {cal.previous:.2f}" + ("" if cal.f1_at_previous is None else f": F1 {cal.f1_at_previous:.3f} there") + ")"
    return (
        f"operating point {cal.threshold:.2f}{prev}: F1 {cal.f1_at_threshold:.3f} on the reviewed images, 95% interval "
        f"{cal.ci95[0]:.2f}-{cal.ci95[1]:.2f}; rests on {cal.n_figures} mitotic figures and {cal.n_false} false detections "
        f"in {len(cal.images)} image(s)"
    )


def write_report(cal: Calibration, weights_in: Path, weights_out: Path, sources: dict[str, str]) -> dict[str, Path]:
    paths = report_paths(weights_out)
    plot_curve(cal, paths["png"])
    lines = [
        "# Calibrated operating point", "",
        f"- Weights: `{weights_in}` -> `{weights_out}` (recorded operating point {cal.threshold:.2f})",
        *[f"- {k}: `{v}`" for k, v in sources.items()],
        f"- Rule: {cal.rule}; bootstrap: {cal.n_bootstrap} resamples of the reviewed figures and false detections "
        "(where the reviewed images show no miss or no false detection, the interval's lower end is the rule of three's: "
        "after n figures without a miss, the missed share is below 3/n)", "",
        summary_line(cal) + ".", "",
        f"Where the rule lands on the resamples (95%): thresholds {cal.threshold_ci95[0]:.2f}-{cal.threshold_ci95[1]:.2f}.",
        f"The interval of F1 is +-{cal.half_width:.2f}; about {cal.figures_for_trust()} reviewed figures would give "
        f"+-{TRUSTED_HALF_WIDTH:.2f} (the width shrinks as one over the square root of the figures).", "",
    ]
    if cal.warnings:
        lines += ["## Warnings", "", *[f"- **{w}**" for w in cal.warnings], ""]
    lines += ["## F1 against threshold", "", f"![F1 against threshold]({paths['png'].name})", "",
              "| threshold | F1, all reviewed | " + " | ".join(cal.per_image_f1) + " |",
              "| ---: | ---: | " + " | ".join("---:" for _ in cal.per_image_f1) + " |"]
    for i, t in enumerate(cal.thresholds):
        if i % 5 and abs(t - cal.threshold) > 1e-9:
            continue  # every 0.05, and the chosen one
        mark = " **(chosen)**" if abs(t - cal.threshold) < 1e-9 else ""
        cells = [_f(cal.f1[i])] + [_f(v[i]) for v in cal.per_image_f1.values()]
        lines.append(f"| {t:.2f}{mark} | " + " | ".join(cells) + " |")
    write_text_atomic(paths["md"], "\n".join(lines) + "\n")
    body = {**cal.record(), "thresholds": cal.thresholds.tolist(), "f1_curve": [None if not np.isfinite(v) else float(v) for v in cal.f1]}
    write_json_atomic(paths["json"], body, indent=1)
    return paths


def _f(value: float) -> str:
    return "n/a" if not np.isfinite(value) else f"{value:.3f}"


def plot_curve(cal: Calibration, path: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.5), dpi=110, layout="constrained")
    ax = fig.add_subplot()
    for name, f1 in cal.per_image_f1.items():
        ax.plot(cal.thresholds, f1, lw=0.8, alpha=0.6, label=name)
    ax.plot(cal.thresholds, cal.f1, color="black", lw=2, label=f"all reviewed ({cal.n_figures} figures)")
    ax.axvline(cal.threshold, color="tab:green", label=f"calibrated {cal.threshold:.2f}")
    ax.axvspan(*cal.threshold_ci95, color="tab:green", alpha=0.1)
    if cal.previous is not None:
        ax.axvline(cal.previous, color="tab:red", ls="--", label=f"recorded before {cal.previous:.2f}")
    ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="threshold", ylabel="F1", title="F1 of the reviewed images against threshold")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower left")
    with atomic_path(path, keep_extension=True) as tmp:
        fig.savefig(tmp)
