"""Box coding between network deltas and (cy, cx, h, w) boxes, and the corner conversions.

Encoding is the inverse used for training targets; decoding follows SPEC section 3 with
the reference's operation order, so float32 results are bit-identical.
"""

from __future__ import annotations

import torch

from .config import REFERENCE, DetectorConfig


def _scale(ref: torch.Tensor, config: DetectorConfig) -> torch.Tensor:
    return ref.new_tensor(config.box_delta_scale)


def decode(deltas: torch.Tensor, anchors: torch.Tensor, config: DetectorConfig = REFERENCE) -> torch.Tensor:
    """Deltas (..., N, 4) -> boxes (cy, cx, h, w)."""
    deltas = deltas * _scale(deltas, config)
    centres = anchors[..., 2:] * deltas[..., :2] + anchors[..., :2]
    sizes = anchors[..., 2:] * torch.exp(deltas[..., 2:])
    return torch.cat([centres, sizes], -1)


def encode(boxes: torch.Tensor, anchors: torch.Tensor, config: DetectorConfig = REFERENCE) -> torch.Tensor:
    """Boxes (cy, cx, h, w) matched to anchors -> regression targets (inverse of decode)."""
    centres = (boxes[..., :2] - anchors[..., :2]) / anchors[..., 2:]
    sizes = torch.log(boxes[..., 2:] / anchors[..., 2:] + 1e-8)
    return torch.cat([centres, sizes], -1) / _scale(boxes, config)


def cthw_to_tlbr(boxes: torch.Tensor) -> torch.Tensor:
    return torch.cat([boxes[..., :2] - boxes[..., 2:] / 2, boxes[..., :2] + boxes[..., 2:] / 2], -1)


def tlbr_to_cthw(boxes: torch.Tensor) -> torch.Tensor:
    return torch.cat([(boxes[..., :2] + boxes[..., 2:]) / 2, boxes[..., 2:] - boxes[..., :2]], -1)


def yx_to_xy(boxes: torch.Tensor) -> torch.Tensor:
    """(y1, x1, y2, x2) -> (x1, y1, x2, y2), the order torchvision.ops expects."""
    return boxes[..., [1, 0, 3, 2]]
