"""The result of detection on one image: `Detections`, the one object every later step
takes (the challenge JSON, the viewer exports, the count and hotspot, the overlay, the
review page). The detector makes it from an image; `results.reader` makes the same
object from a result file. How it is written is for `results/` to decide.

Like detectron2's `Instances`: per-candidate fields (arrays of one length) plus per-image
fields, and indexing (`found[mask]`, `found[indices]`) that keeps the image's fields.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from ..config import REFERENCE

__all__ = ["MITOTIC", "NON_MITOTIC", "Detections", "Thumbnail"]

# The class names of the challenge's output, and of every file this project reads back.
MITOTIC = "mitotic figure"
NON_MITOTIC = "non-mitotic figure"


@dataclass(frozen=True)
class Thumbnail:
    """A downsampled RGB view of the whole image: what tissue masks and overlays are made of."""

    pixels: np.ndarray  # (h, w, 3) uint8
    downsample: float  # level-0 pixels per thumbnail pixel


@dataclass
class Detections:
    """Every candidate found in one image, in descending score order.

    Per candidate: `boxes` (N, 4) XYXY in level-0 pixels (formats: midog.network.box_coding),
    `scores` float32 (NaN where a result file gives none), `classes` the network's class
    column, `xy_mm` (N, 2) the centres in millimetres exactly as the challenge JSON writes
    them (every writer takes coordinates from them, so outputs made at detection time and
    outputs made later from the JSON file agree to the bit), and `mitotic`, the one answer
    to "is it a mitotic figure": by default the score above `threshold` (the operating
    point of the detector that made them); a result file's names when read from one.
    `names` are the class names a result file gave (exports keep names other than the
    challenge's two); `class_names` gives them, else names them from `mitotic`.
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
    mitotic: np.ndarray = None  # type: ignore[assignment]  # (N,) bool; derived from scores when not given

    def __post_init__(self) -> None:
        if self.xy_mm is None:
            self.xy_mm = self.xy_px * np.asarray(self.spacing_mm, dtype=np.float64)
        if self.mitotic is None:
            # In float64, as the JSON writer has always compared: a float32 comparison would
            # round the threshold and could flip a candidate scoring within rounding of it.
            self.mitotic = self.scores.astype(np.float64) > self.threshold

    def __len__(self) -> int:
        return len(self.scores)

    def __getitem__(self, keep: np.ndarray | slice | list[int]) -> "Detections":
        """The candidates where `keep` (a mask, indices or a slice) holds; the image's fields kept."""
        names = None if self.names is None else [self.names[i] for i in np.arange(len(self))[keep]]
        return replace(self, boxes=self.boxes[keep], scores=self.scores[keep], classes=self.classes[keep],
                       xy_mm=self.xy_mm[keep], mitotic=self.mitotic[keep], names=names)

    @property
    def xy_px(self) -> np.ndarray:
        """(N, 2) box centres (x, y) in pixels: no half-pixel offset, as the reference reports them."""
        b = self.boxes.astype(np.float64)
        return np.stack([(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2], 1).reshape(-1, 2)

    @property
    def class_names(self) -> list[str]:
        """Each candidate's class name: the result file's, else named from `mitotic`."""
        if self.names is not None:
            return list(self.names)
        return [MITOTIC if m else NON_MITOTIC for m in self.mitotic.tolist()]

    def mitotic_figures(self) -> "Detections":
        """The detections proper: the candidates that are mitotic figures."""
        return self[self.mitotic]

    def at_threshold(self, threshold: float) -> "Detections":
        """The same candidates at another operating point: those scoring above `threshold`
        are mitotic figures, whatever a result file named them."""
        mitotic = self.scores.astype(np.float64) > threshold
        return replace(self, threshold=threshold, mitotic=mitotic, names=None)
