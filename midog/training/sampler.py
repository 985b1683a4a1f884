"""Patch sampling (docs/reference-algorithm.md#training-recipe): half the labelled patches around a mitotic figure, the
rest (and every unlabelled-scanner patch) uniformly at random; each batch holds the same
number of patches from every scanner, so the domain classifier sees balanced classes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..config import SamplingConfig
from .data import ImageRecord, ImageStore


@dataclass
class Patch:
    pixels: np.ndarray  # (P, P, 3) uint8
    boxes: np.ndarray  # (n, 4) x1, y1, x2, y2 in patch pixels, mitotic figures only
    domain: int
    labelled: bool


def patch_origin(record: ImageRecord, size: int, rng: np.random.Generator, positive_fraction: float) -> tuple[int, int]:
    """Top-left corner of a patch inside the image."""
    max_x, max_y = max(0, record.width - size), max(0, record.height - size)
    mitoses = record.mitoses() if record.labelled else np.zeros((0, 4))
    if len(mitoses) and rng.random() < positive_fraction:
        x1, y1 = mitoses[rng.integers(len(mitoses))][:2]
        # The reference's rule: figure top-left minus 0..size, so the figure's corner lies
        # anywhere in the patch (the figure may be cut at the far edge).
        x, y = x1 - rng.integers(0, size + 1), y1 - rng.integers(0, size + 1)
        return int(np.clip(x, 0, max_x)), int(np.clip(y, 0, max_y))
    return int(rng.integers(0, max_x + 1)), int(rng.integers(0, max_y + 1))


def boxes_in_patch(boxes: np.ndarray, x: int, y: int, size: int) -> np.ndarray:
    """Boxes whose centre lies strictly inside the patch (0 < c < size, the reference's
    test: a centre on the edge belongs to neither patch), shifted and clipped to the patch."""
    if len(boxes) == 0:
        return np.zeros((0, 4), np.float32)
    shifted = boxes - np.array([x, y, x, y], np.float32)
    cx, cy = (shifted[:, 0] + shifted[:, 2]) / 2, (shifted[:, 1] + shifted[:, 3]) / 2
    keep = (cx > 0) & (cx < size) & (cy > 0) & (cy < size)
    return np.clip(shifted[keep], 0, size).astype(np.float32)


class BatchSampler:
    """Batches of `sampling.per_scanner` patches from each scanner, images drawn at random."""

    def __init__(self, records: list[ImageRecord], n_domains: int, store: ImageStore, sampling: SamplingConfig) -> None:
        self.by_domain = [[r for r in records if r.domain == d] for d in range(n_domains)]
        self.store = store
        self.patch_size = sampling.patch_size
        self.per_scanner = sampling.per_scanner
        self.positive_fraction = sampling.positive_fraction

    @property
    def domains(self) -> list[int]:
        """Domains that have images in this split (a split may lack the unlabelled scanner)."""
        return [d for d, recs in enumerate(self.by_domain) if recs]

    def sample(self, record: ImageRecord, rng: np.random.Generator) -> Patch:
        x, y = patch_origin(record, self.patch_size, rng, self.positive_fraction)
        pixels = self.store.read(record, x, y, self.patch_size)
        boxes = boxes_in_patch(record.mitoses(), x, y, self.patch_size) if record.labelled else np.zeros((0, 4), np.float32)
        return Patch(pixels, boxes, record.domain, record.labelled)

    def batch(self, rng: np.random.Generator) -> list[Patch]:
        patches = []
        for d in self.domains:
            recs = self.by_domain[d]
            for _ in range(self.per_scanner):
                patches.append(self.sample(recs[rng.integers(len(recs))], rng))
        return patches
