"""Detections -> Grand Challenge "Multiple points" JSON in millimetres (SPEC section 5)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from .detections import Detections

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
                {"point": [x_mm, y_mm, 0], "probability": score, "name": "mitotic figure" if mitotic else "non-mitotic figure"}
            )
    return {"type": "Multiple points", "points": points, "version": {"major": 1, "minor": 0}}


def write_json_atomic(path: str | Path, obj: Any) -> Path:
    """Write JSON so that readers never see a half-written file: temp file, fsync, rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
