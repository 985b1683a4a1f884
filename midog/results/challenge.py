"""The challenge's "Multiple points" JSON of `Detections`, in the output styles the
containers write: "2021" lists the mitotic figures only, without scores; "2022" every
candidate with its probability and name (what process.py's "2025" style also writes,
under a top-level name)."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import numpy as np

from ..detector.detections import MITOTIC, NON_MITOTIC, Detections

__all__ = ["STYLES", "as_written", "check_style", "min_score_for", "multiple_points"]

# "2021": the mitotic figures only, no scores; "2022": every candidate, scored and named.
STYLES = ("2021", "2022")


def check_style(style: str) -> None:
    if style not in STYLES:
        raise ValueError(f"style must be one of {STYLES}, not {style!r}")


def min_score_for(style: str, threshold: float, candidate_threshold: float) -> float:
    """The lowest score an output style lists: the 2021 file only points above the operating
    point (so the detector post-processes several times fewer boxes), 2022 every candidate
    above the candidate floor."""
    check_style(style)
    return threshold if style == "2021" else candidate_threshold


def multiple_points(detections: Detections, style: str = "2021") -> dict[str, Any]:
    """2021: the mitotic figures only. 2022: every candidate with its probability, named
    "mitotic figure" or "non-mitotic figure" as `detections.mitotic` says (a result read
    from a file keeps the names it was read with; `at_threshold` names them anew)."""
    check_style(style)
    points = []
    for (x_mm, y_mm), score, is_mitotic in zip(detections.xy_mm.tolist(), detections.scores.tolist(), detections.mitotic.tolist()):
        point = [float(x_mm), float(y_mm), 0]
        if style == "2021":
            if is_mitotic:
                points.append({"point": point})
        elif math.isnan(score):
            points.append({"point": point, "name": MITOTIC if is_mitotic else NON_MITOTIC})
        else:
            points.append({"point": point, "probability": score, "name": MITOTIC if is_mitotic else NON_MITOTIC})
    return {"type": "Multiple points", "points": points, "version": {"major": 1, "minor": 0}}


def as_written(detections: Detections, style: str) -> Detections:
    """What a result file of `style` records of `detections`, as reading that file back
    gives it: 2021 the mitotic figures without scores, 2022 every candidate, named."""
    check_style(style)
    if style == "2021":
        figures = detections.mitotic_figures()
        return replace(figures, scores=np.full(len(figures), np.nan), names=None)
    return replace(detections, names=None)
