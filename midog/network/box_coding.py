"""The three box formats of this project, and the conversions between them.

This is the one place the formats are defined; other modules name them by the labels
below (CTHW, TLBR, XYXY).

CTHW, centre-size in normalised tile units: `(cy, cx, h, w)`, y first. A tile's
    pixels map to [-1, 1] on both axes (pixel p of a tile of size S is p / (S / 2) - 1),
    so a whole tile is the box (0, 0, 2, 2). Anchors, the network's box regression and
    `decode` use this format: it is the reference's own, and the reference's arithmetic
    in it (operation order included) is kept so that float32 results are bit-identical.

TLBR, y-first corners in the same normalised units: `(y1, x1, y2, x2)`. Used for
    clamping boxes to the tile and for IoU. torchvision's IoU functions read
    `(x1, y1, x2, y2)` but give the same IoU on y-first boxes; `nms` is given XYXY via
    `yx_to_xy` all the same, so that its tie order matches the reference.

XYXY, x-first corners in pixels: `(x1, y1, x2, y2)`, the format of everything outside
    the network: `Detections.boxes` (level-0 image pixels), the per-tile boxes of
    `postprocess.tile_boxes` (tile pixels, truncated to integers as the reference
    does), MIDOG.json's `bbox` and the training targets before matching. A point is
    the box centre, ((x1 + x2) / 2, (y1 + y2) / 2), with no half-pixel offset.

`encode` is `decode`'s inverse and makes the training targets.
"""

from __future__ import annotations

import torch

from ..config import REFERENCE, DetectorConfig


def _scale(ref: torch.Tensor, config: DetectorConfig) -> torch.Tensor:
    return ref.new_tensor(config.box_delta_scale)


def decode(deltas: torch.Tensor, anchors: torch.Tensor, config: DetectorConfig = REFERENCE) -> torch.Tensor:
    """Deltas (..., N, 4) -> CTHW boxes."""
    deltas = deltas * _scale(deltas, config)
    centres = anchors[..., 2:] * deltas[..., :2] + anchors[..., :2]
    sizes = anchors[..., 2:] * torch.exp(deltas[..., 2:])
    return torch.cat([centres, sizes], -1)


def encode(boxes: torch.Tensor, anchors: torch.Tensor, config: DetectorConfig = REFERENCE) -> torch.Tensor:
    """CTHW boxes matched to anchors -> regression targets (inverse of decode)."""
    centres = (boxes[..., :2] - anchors[..., :2]) / anchors[..., 2:]
    sizes = torch.log(boxes[..., 2:] / anchors[..., 2:] + 1e-8)
    return torch.cat([centres, sizes], -1) / _scale(boxes, config)


def cthw_to_tlbr(boxes: torch.Tensor) -> torch.Tensor:
    """CTHW -> TLBR."""
    return torch.cat([boxes[..., :2] - boxes[..., 2:] / 2, boxes[..., :2] + boxes[..., 2:] / 2], -1)


def tlbr_to_cthw(boxes: torch.Tensor) -> torch.Tensor:
    """TLBR -> CTHW."""
    return torch.cat([(boxes[..., :2] + boxes[..., 2:]) / 2, boxes[..., 2:] - boxes[..., :2]], -1)


def yx_to_xy(boxes: torch.Tensor) -> torch.Tensor:
    """TLBR -> the same corners x first, the order torchvision.ops expects (units unchanged)."""
    return boxes[..., [1, 0, 3, 2]]
