"""The points of a "Multiple points" result file, as exports and counts need them.

Reads every shape the detector and the challenge containers write: 2021 (points only, all
of them mitotic figures), 2022 (every candidate with "name" and "probability") and 2025
(the same plus a top-level "name", e.g. "Points of interest").
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .detections import MITOTIC
from ..evaluation.io import load_json, parse_points


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


def read_points(path: str | Path) -> Points:
    """A result file's points; a `MidogError` naming the file and the entry when malformed."""
    return points_from_json(load_json(Path(path), "result file"), path)


def points_from_json(data: object, path: str | Path) -> Points:
    """`read_points` for content already loaded; `path` names it in errors."""
    xyz, probability, names = parse_points(data, path)
    return Points(xyz[:, :2], probability, names)
