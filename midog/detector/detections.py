"""The result of detection on one image, and the challenge's "Multiple points" JSON of it.

`Detections` is the one object every later step takes: the challenge JSON, the viewer
exports, the count and hotspot, the overlay. The detector makes it from an image; the
reader (`results.reader`) makes the same object from a result file.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..config import REFERENCE

__all__ = ["MITOTIC", "NON_MITOTIC", "STYLES", "Detections", "Thumbnail", "multiple_points"]

# The class names of the challenge's output, and of every file this project reads back.
MITOTIC = "mitotic figure"
NON_MITOTIC = "non-mitotic figure"
# "2021": the mitotic figures only, no scores; "2022": every candidate, scored and named.
STYLES = ("2021", "2022")


@dataclass(frozen=True)
class Thumbnail:
    """A downsampled RGB view of the whole image: what tissue masks and overlays are made of."""

    pixels: np.ndarray  # (h, w, 3) uint8
    downsample: float  # level-0 pixels per thumbnail pixel


@dataclass
class Detections:
    """Every candidate found in one image, in descending score order.

    `boxes` (N, 4) are XYXY in level-0 pixels (formats: midog.network.box_coding), `scores`
    float32 (NaN where a result file gives none), `classes` the network's class column.
    `threshold` is the operating point of the detector that made them: candidates scoring
    above it are mitotic figures, unless `names` (read from a file) say otherwise. The
    accessors take an explicit `threshold` to look at another operating point.

    `xy_mm` are the centres in millimetres exactly as the challenge JSON writes them
    (pixels times spacing); every writer takes coordinates from them, so outputs made at
    detection time and outputs made later from the JSON file agree to the bit.
    """

    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray
    spacing_mm: tuple[float, float]
    info: dict = field(default_factory=dict)  # tiles run / skipped, timings: for reports only
    threshold: float = REFERENCE.threshold
    image_size: tuple[int, int] | None = None  # (width, height) of level 0
    offset_px: tuple[int, int] = (0, 0)  # level-0 origin of the slide's non-empty region
    thumbnail: Thumbnail | None = None  # when the detector was asked for one (counts, overlays)
    image: Path | None = None
    names: list[str] | None = None  # each point's class name as a result file gives it
    xy_mm: np.ndarray = None  # type: ignore[assignment]  # (N, 2); derived from boxes when not given

    def __post_init__(self) -> None:
        if self.xy_mm is None:
            self.xy_mm = self.centres_px() * np.asarray(self.spacing_mm, dtype=np.float64)

    def __len__(self) -> int:
        return len(self.scores)

    def centres_px(self) -> np.ndarray:
        """Box centres (x, y) in pixels: no half-pixel offset, as the reference reports them."""
        b = self.boxes.astype(np.float64)
        return np.stack([(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2], 1).reshape(-1, 2)

    def centres_mm(self) -> list[tuple[float, float]]:
        return [(float(x), float(y)) for x, y in self.xy_mm]

    def subset(self, keep: np.ndarray) -> "Detections":
        """The candidates where `keep` (a mask or indices) holds, everything else kept."""
        names = None if self.names is None else [self.names[i] for i in np.arange(len(self))[keep]]
        return replace(self, boxes=self.boxes[keep], scores=self.scores[keep], classes=self.classes[keep], xy_mm=self.xy_mm[keep], names=names)

    def above(self, threshold: float) -> "Detections":
        """The candidates scoring above `threshold`, as Detections."""
        return self.subset(self.mitotic(threshold))

    def mitotic_figures(self, threshold: float | None = None) -> "Detections":
        """The candidates above the operating point (or `threshold`): the detections proper."""
        if threshold is None and self.names is not None:
            return self.subset(self.mitotic())
        return self.above(self.threshold if threshold is None else threshold)

    def mitotic(self, threshold: float | None = None) -> np.ndarray:
        """Which candidates are mitotic figures: by `threshold` when given; else by the names
        a result file gives, else by the operating point."""
        if threshold is None and self.names is not None:
            return np.array([n == MITOTIC for n in self.names], bool)
        # In float64, as the JSON writer has always compared: a float32 comparison would
        # round the threshold and could flip a candidate scoring within rounding of it.
        return self.scores.astype(np.float64) > (self.threshold if threshold is None else threshold)

    def points_px(self, threshold: float | None = None) -> np.ndarray:
        """(N, 2) centres (x, y) in pixels; only those scoring above `threshold` if given."""
        return (self if threshold is None else self.above(threshold)).centres_px()

    def points_mm(self, threshold: float | None = None) -> np.ndarray:
        """(N, 2) centres (x, y) in millimetres, as the challenge scores them; only those
        scoring above `threshold` if given."""
        return (self if threshold is None else self.above(threshold)).xy_mm

    def labels(self, threshold: float | None = None) -> list[str]:
        """Each candidate's name in the 2022 output: "mitotic figure" above the operating
        point (or `threshold`), else "non-mitotic figure"."""
        return [MITOTIC if m else NON_MITOTIC for m in self.mitotic(threshold).tolist()]

    def as_written(self, style: str) -> "Detections":
        """What a result file of `style` records of these detections, as reading that file
        back gives it: 2021 the mitotic figures without scores, 2022 every candidate named."""
        check_style(style)
        if style == "2021":
            figures = self.mitotic_figures()
            return replace(figures, scores=np.full(len(figures), np.nan), names=[MITOTIC] * len(figures))
        return replace(self, names=self.labels())

    def to_json(self, style: str = "2021", threshold: float | None = None) -> dict[str, Any]:
        """The Grand Challenge "Multiple points" answer, as `midog detect --style` writes it:
        "2021" lists the mitotic figures, "2022" every candidate with probability and name."""
        return multiple_points(self, threshold, style)


def check_style(style: str) -> None:
    if style not in STYLES:
        raise ValueError(f"style must be one of {STYLES}, not {style!r}")


def multiple_points(detections: Detections, threshold: float | None = None, style: str = "2021") -> dict[str, Any]:
    """2021: points above the threshold only. 2022: every candidate with its probability,
    named "mitotic figure" above the threshold and "non-mitotic figure" below it. Without a
    `threshold`, each point is what `detections.mitotic()` decides: a result read from a
    file keeps the names it was read with."""
    check_style(style)
    mitotic = detections.mitotic(threshold)
    points = []
    for (x_mm, y_mm), score, is_mitotic in zip(detections.centres_mm(), detections.scores.tolist(), mitotic.tolist()):
        if style == "2021":
            if is_mitotic:
                points.append({"point": [x_mm, y_mm, 0]})
        elif math.isnan(score):
            points.append({"point": [x_mm, y_mm, 0], "name": MITOTIC if is_mitotic else NON_MITOTIC})
        else:
            points.append({"point": [x_mm, y_mm, 0], "probability": score, "name": MITOTIC if is_mitotic else NON_MITOTIC})
    return {"type": "Multiple points", "points": points, "version": {"major": 1, "minor": 0}}
