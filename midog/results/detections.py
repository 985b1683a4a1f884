"""The result of detection on one image: pixel boxes, scores and classes, plus spacing."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..config.settings import REFERENCE

# The class names of the challenge's output, and of every file this project reads back.
MITOTIC = "mitotic figure"
NON_MITOTIC = "non-mitotic figure"


@dataclass
class Detections:
    """Every candidate found in one image, in descending score order.

    `boxes` (N, 4) are XYXY in level-0 pixels (formats: midog.network.box_coding), `scores`
    float32, `classes` the network's class column. `threshold` is the operating point of
    the detector that made them: candidates scoring above it are mitotic figures. The
    accessors take an explicit `threshold` to look at another operating point.
    """

    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray
    spacing_mm: tuple[float, float]
    info: dict = field(default_factory=dict)  # tiles run / skipped, timings: for reports only
    threshold: float = REFERENCE.threshold

    def __len__(self) -> int:
        return len(self.scores)

    def centres_px(self) -> np.ndarray:
        """Box centres (x, y) in pixels: no half-pixel offset, as the reference reports them."""
        b = self.boxes.astype(np.float64)
        return np.stack([(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2], 1)

    def centres_mm(self) -> list[tuple[float, float]]:
        sx, sy = self.spacing_mm
        return [(float(x) * sx, float(y) * sy) for x, y in self.centres_px()]

    def above(self, threshold: float) -> "Detections":
        """The candidates scoring above `threshold`, as Detections."""
        keep = self.scores > threshold
        return Detections(
            self.boxes[keep], self.scores[keep], self.classes[keep], self.spacing_mm, self.info, self.threshold
        )

    def mitotic_figures(self, threshold: float | None = None) -> "Detections":
        """The candidates above the operating point (or `threshold`): the detections proper."""
        return self.above(self.threshold if threshold is None else threshold)

    def points_px(self, threshold: float | None = None) -> np.ndarray:
        """(N, 2) centres (x, y) in pixels; only those scoring above `threshold` if given."""
        return (self if threshold is None else self.above(threshold)).centres_px()

    def points_mm(self, threshold: float | None = None) -> np.ndarray:
        """(N, 2) centres (x, y) in millimetres, as the challenge scores them; only those
        scoring above `threshold` if given."""
        return self.points_px(threshold) * np.asarray(self.spacing_mm, dtype=np.float64)

    def labels(self, threshold: float | None = None) -> list[str]:
        """Each candidate's name in the 2022 output: "mitotic figure" above the operating
        point (or `threshold`), else "non-mitotic figure"."""
        t = self.threshold if threshold is None else threshold
        return [MITOTIC if s > t else NON_MITOTIC for s in self.scores.tolist()]

    def to_json(self, style: str = "2021", threshold: float | None = None) -> dict[str, Any]:
        """The Grand Challenge "Multiple points" answer, as `midog detect --style` writes it:
        "2021" lists the mitotic figures, "2022" every candidate with probability and name."""
        from .output import multiple_points

        return multiple_points(self, self.threshold if threshold is None else threshold, style)
