"""The result of detection on one image: pixel boxes, scores and classes, plus spacing."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Detections:
    """Boxes (N, 4) x1, y1, x2, y2 in level-0 pixels, float32 scores, classes; descending score."""

    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray
    spacing_mm: tuple[float, float]
    info: dict = field(default_factory=dict)  # tiles run / skipped, timings: for reports only

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
        keep = self.scores > threshold
        return Detections(self.boxes[keep], self.scores[keep], self.classes[keep], self.spacing_mm, self.info)
