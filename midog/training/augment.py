"""Augmentation of a batch (docs/reference-algorithm.md#training-recipe): dihedral flips, rotation, zoom, perspective
warp and lighting, each with probability `AugmentConfig.p` (0.5); the strengths are the
run's `AugmentConfig`.

Geometry is one projective matrix per patch, applied with `grid_sample`, so the patch is
resampled once. Boxes follow their centre; a 50 px cell box stays a square of the cell's
new size instead of growing around rotated corners.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from ..config import AugmentConfig  # noqa: F401 - its home is midog.config.settings; imported from here too


def random_matrix(rng: np.random.Generator, cfg: AugmentConfig) -> np.ndarray:
    """3x3 map from output to input coordinates, both normalised to [-1, 1] (x, y)."""
    m = np.eye(3)
    if not cfg.enabled:
        return m
    # Dihedral group: independent flips of x and y plus a transpose cover all 8 elements.
    d = np.eye(3)
    if rng.random() < cfg.p:
        d = np.diag([-1.0, 1.0, 1.0]) @ d
    if rng.random() < cfg.p:
        d = np.diag([1.0, -1.0, 1.0]) @ d
    if rng.random() < cfg.p:
        d = d[[1, 0, 2]]
    m = d @ m
    if rng.random() < cfg.p:
        a = math.radians(rng.uniform(-cfg.max_rotate_deg, cfg.max_rotate_deg))
        m = np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]]) @ m
    if rng.random() < cfg.p:
        # Zoom in by s around a random centre that keeps the view inside the patch.
        s = rng.uniform(1.0, cfg.max_zoom)
        cx, cy = (1 - 1 / s) * rng.uniform(-1, 1, 2)
        m = np.array([[1 / s, 0, cx], [0, 1 / s, cy], [0, 0, 1]]) @ m
    if rng.random() < cfg.p:
        wx, wy = rng.uniform(-cfg.max_warp, cfg.max_warp, 2)
        m = m @ np.array([[1, 0, 0], [0, 1, 0], [wx, wy, 1]])
    return m


def _project(m: np.ndarray, xy: np.ndarray) -> np.ndarray:
    h = np.concatenate([xy, np.ones((len(xy), 1))], 1) @ m.T
    return h[:, :2] / h[:, 2:3]


def transform_boxes(boxes: np.ndarray, m: np.ndarray, size: int) -> np.ndarray:
    """Boxes (x1, y1, x2, y2 pixels) of the input patch -> output patch, for the output->input
    matrix `m`. Boxes whose centre leaves the patch are dropped, the rest clipped."""
    if len(boxes) == 0:
        return np.zeros((0, 4), np.float32)
    inv = np.linalg.inv(m)
    to_norm = lambda p: (2 * p) / size - 1  # noqa: E731 - pixel edges map to -1 and 1
    corners = np.stack(
        [boxes[:, [0, 1]], boxes[:, [2, 1]], boxes[:, [2, 3]], boxes[:, [0, 3]]], 1
    )  # (n, 4, 2)
    out = (_project(inv, to_norm(corners.reshape(-1, 2))).reshape(-1, 4, 2) + 1) * size / 2
    centre = (_project(inv, to_norm((boxes[:, :2] + boxes[:, 2:]) / 2)) + 1) * size / 2
    # Shoelace area of the mapped quadrilateral: the cell's new size, whatever the rotation.
    x, y = out[..., 0], out[..., 1]
    area = 0.5 * np.abs(np.sum(x * np.roll(y, -1, 1) - y * np.roll(x, -1, 1), 1))
    bw, bh = out[..., 0].max(1) - out[..., 0].min(1), out[..., 1].max(1) - out[..., 1].min(1)
    shrink = np.sqrt(area / np.maximum(bw * bh, 1e-6))
    half = np.stack([bw * shrink, bh * shrink], 1) / 2
    keep = np.all((centre >= 0) & (centre < size), 1)
    res = np.concatenate([centre - half, centre + half], 1)[keep]
    return np.clip(res, 0, size).astype(np.float32)


def lighting(x: torch.Tensor, rng: np.random.Generator, cfg: AugmentConfig) -> torch.Tensor:
    """Brightness and contrast on the logit of intensity, as fastai's `brightness` and
    `contrast` do: a shift and a scale that never leave [0, 1]. x: (3, H, W) in [0, 1]."""
    if not cfg.enabled:
        return x
    do_b, do_c = rng.random() < cfg.p, rng.random() < cfg.p
    if not (do_b or do_c):
        return x
    logit = torch.logit(x.clamp(1e-4, 1 - 1e-4))
    if do_b:
        b = rng.uniform(0.5 - cfg.max_lighting / 2, 0.5 + cfg.max_lighting / 2)
        logit = logit + math.log(b / (1 - b))
    if do_c:
        lo, hi = math.log(1 - cfg.max_lighting), -math.log(1 - cfg.max_lighting)
        logit = logit * math.exp(rng.uniform(lo, hi))
    return torch.sigmoid(logit)


def augment_batch(
    images: torch.Tensor, boxes: list[np.ndarray], rng: np.random.Generator, cfg: AugmentConfig
) -> tuple[torch.Tensor, list[np.ndarray]]:
    """images: (B, 3, P, P) float in [0, 1]; boxes per image in pixels."""
    b, _, size, _ = images.shape
    mats = [random_matrix(rng, cfg) for _ in range(b)]
    out_boxes = [transform_boxes(bx, m, size) for bx, m in zip(boxes, mats)]
    if any(not np.allclose(m, np.eye(3)) for m in mats):
        # Output pixel centres in normalised coordinates (align_corners=False convention).
        lin = (torch.arange(size, dtype=torch.float64) * 2 + 1) / size - 1
        gy, gx = torch.meshgrid(lin, lin, indexing="ij")
        pts = torch.stack([gx, gy, torch.ones_like(gx)], -1).view(-1, 3)
        grids = []
        for m in mats:
            h = pts @ torch.from_numpy(m).T
            grids.append((h[:, :2] / h[:, 2:3]).view(size, size, 2))
        grid = torch.stack(grids).to(images.dtype)
        images = F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    images = torch.stack([lighting(img, rng, cfg) for img in images])
    return images, out_boxes
