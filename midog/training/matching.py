"""Anchor matching and regression targets (docs/reference-algorithm.md#anchors-and-box-coding, #training-recipe).

An anchor is foreground when its best IoU with a ground-truth box is >= 0.5, background
below 0.4, ignored in between; as in the reference, a box that no anchor reaches 0.5
with gets no forced match.
"""

from __future__ import annotations

import numpy as np
import torch
from torchvision.ops import box_iou

from ..box_coding import cthw_to_tlbr, encode, tlbr_to_cthw
from ..config import REFERENCE, DetectorConfig

IGNORE = -2
BACKGROUND = -1


def pixel_boxes_to_cthw(boxes_xyxy: np.ndarray, size: int) -> torch.Tensor:
    """XYXY patch pixels -> CTHW boxes, as the anchors (formats: midog.box_coding)."""
    b = torch.as_tensor(boxes_xyxy, dtype=torch.float32).view(-1, 4)
    tlbr = b[:, [1, 0, 3, 2]] / (size / 2) - 1  # y first, as the anchors
    return tlbr_to_cthw(tlbr)


def match(anchors: torch.Tensor, gt_cthw: torch.Tensor, fg_iou: float = 0.5, bg_iou: float = 0.4) -> torch.Tensor:
    """(N,) index of the matched box for each anchor, BACKGROUND or IGNORE."""
    matches = torch.full((anchors.shape[0],), BACKGROUND, dtype=torch.long, device=anchors.device)
    if gt_cthw.numel() == 0:
        return matches
    # torchvision's IoU reads (x1, y1, x2, y2); on (y1, x1, y2, x2) boxes it gives the same values.
    iou = box_iou(cthw_to_tlbr(anchors), cthw_to_tlbr(gt_cthw))
    best, idx = iou.max(1)
    matches[best >= bg_iou] = IGNORE
    fg = best >= fg_iou
    matches[fg] = idx[fg]
    return matches


def build_targets(
    anchors: torch.Tensor,
    boxes: list[np.ndarray],
    size: int,
    config: DetectorConfig = REFERENCE,
    fg_iou: float = 0.5,
    bg_iou: float = 0.4,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image: matches (B, N) and encoded box targets (B, N, 4) (valid where matched)."""
    all_matches, all_targets = [], []
    for bx in boxes:
        gt = pixel_boxes_to_cthw(bx, size).to(anchors.device)
        m = match(anchors, gt, fg_iou, bg_iou)
        target = torch.zeros_like(anchors)
        fg = m >= 0
        if bool(fg.any()):
            target[fg] = encode(gt[m[fg]], anchors[fg], config)
        all_matches.append(m)
        all_targets.append(target)
    return torch.stack(all_matches), torch.stack(all_targets)
