"""Anchor boxes of the reference (docs/reference-algorithm.md#anchors-and-box-coding), in normalised [-1, 1] tile coordinates.

Each anchor is a CTHW box (formats: midog.network.box_coding). Order: level (P3, P4, P5), row, column, scale;
this matches the flattening of the network's head outputs.
"""

from __future__ import annotations

import math

import torch

from ..config import REFERENCE, DetectorConfig


def feature_sizes(tile_size: int) -> list[tuple[int, int]]:
    """Grid sizes of P3, P4, P5 (strides 8, 16, 32)."""
    return [(tile_size // s, tile_size // s) for s in (8, 16, 32)]


def _grid(h: int, w: int) -> torch.Tensor:
    # Computed as the reference does (float32 linspace with double end points) so the
    # anchor centres are bit-identical.
    xs = torch.linspace(-1 + 1 / w, 1 - 1 / w, w) if w > 1 else torch.tensor([0.0])
    ys = torch.linspace(-1 + 1 / h, 1 - 1 / h, h) if h > 1 else torch.tensor([0.0])
    grid = torch.empty(h, w, 2)
    grid[:, :, 0] = ys[:, None].expand(h, w)
    grid[:, :, 1] = xs[None, :].expand(h, w)
    return grid.view(-1, 2)


def make_anchors(config: DetectorConfig = REFERENCE, tile_size: int | None = None) -> torch.Tensor:
    """(N, 4) float32 anchors; 26880 for the reference 512 px tile."""
    tile_size = tile_size or config.tile_size
    aspects = torch.tensor(
        [[s * math.sqrt(r), s * math.sqrt(1 / r)] for r in config.anchor_ratios for s in config.anchor_scales]
    )
    levels = []
    for h, w in feature_sizes(tile_size):
        # Size 4 cells times scale: neighbouring anchors overlap, as in the reference.
        sizes = 4 * (aspects * torch.tensor([2 / h, 2 / w]))
        centres = _grid(h, w)
        n, a = centres.shape[0], aspects.shape[0]
        levels.append(torch.cat([centres[:, None].expand(n, a, 2), sizes[None].expand(n, a, 2)], 2).reshape(-1, 4))
    return torch.cat(levels, 0)
