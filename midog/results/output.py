"""Detections -> Grand Challenge "Multiple points" JSON in millimetres (docs/reference-algorithm.md#output-format)."""

from __future__ import annotations

from typing import Any

from ..atomic import write_json_atomic as write_json_atomic  # callers import it from here
from .detections import MITOTIC, NON_MITOTIC, Detections

STYLES = ("2021", "2022")


def multiple_points(detections: Detections, threshold: float, style: str = "2021") -> dict[str, Any]:
    """2021: points above the threshold only. 2022: every candidate with its probability,
    named "mitotic figure" above the threshold and "non-mitotic figure" below it."""
    if style not in STYLES:
        raise ValueError(f"style must be one of {STYLES}, not {style!r}")
    points = []
    for (x_mm, y_mm), score in zip(detections.centres_mm(), detections.scores):
        score = float(score)
        mitotic = score > threshold
        if style == "2021":
            if mitotic:
                points.append({"point": [x_mm, y_mm, 0]})
        else:
            points.append(
                {"point": [x_mm, y_mm, 0], "probability": score, "name": MITOTIC if mitotic else NON_MITOTIC}
            )
    return {"type": "Multiple points", "points": points, "version": {"major": 1, "minor": 0}}
