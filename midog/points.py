"""The points of a "Multiple points" result file, as exports and counts need them.

Reads every shape the detector and the challenge containers write: 2021 (points only, all
of them mitotic figures), 2022 (every candidate with "name" and "probability") and 2025
(the same plus a top-level "name", e.g. "Points of interest").
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import MidogError
from .evaluation.io import load_json

MITOTIC = "mitotic figure"
NON_MITOTIC = "non-mitotic figure"


@dataclass(frozen=True)
class Points:
    xy_mm: np.ndarray  # (n, 2) float64
    probability: np.ndarray  # (n,) float64; NaN where the file gives none (2021 style)
    labels: list[str]  # "mitotic figure" for unnamed 2021 points

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def mitotic(self) -> np.ndarray:
        """Which points are mitotic figures: named so, or unnamed (2021 files list only those)."""
        return np.array([label == MITOTIC for label in self.labels], bool)

    def xy_px(self, spacing_mm: tuple[float, float]) -> np.ndarray:
        """Level-0 pixel coordinates: millimetres divided by the spacing, per axis."""
        return self.xy_mm / np.asarray(spacing_mm, float)


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def read_points(path: str | Path) -> Points:
    """A result file's points; a `MidogError` naming the file and the entry when malformed."""
    return points_from_json(load_json(Path(path), "result file"), path)


def points_from_json(data: object, path: str | Path) -> Points:
    """`read_points` for content already loaded; `path` names it in errors."""
    if not isinstance(data, dict) or not isinstance(data.get("points"), list):
        raise MidogError(f'{path}: not a "Multiple points" result (needs a "points" list)')
    xy, prob, labels = [], [], []
    for i, entry in enumerate(data["points"]):
        point = entry.get("point") if isinstance(entry, dict) else None
        if not isinstance(point, list) or len(point) not in (2, 3) or not all(_number(v) for v in point):
            raise MidogError(f"{path}: points[{i}] has no point [x_mm, y_mm, z]: {entry!r}")
        p = entry.get("probability")
        if p is not None and not _number(p):
            raise MidogError(f"{path}: points[{i}].probability is not a number: {p!r}")
        name = entry.get("name", MITOTIC)
        if not isinstance(name, str):
            raise MidogError(f"{path}: points[{i}].name is not a string: {name!r}")
        xy.append(point[:2])
        prob.append(math.nan if p is None else float(p))
        labels.append(name)
    return Points(np.asarray(xy, float).reshape(-1, 2), np.asarray(prob, float), labels)
