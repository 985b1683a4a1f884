"""Anchor matching and regression targets, as the reference computes them
(docs/reference-algorithm.md#anchors-and-box-coding, #training-recipe).

An anchor is foreground when its best IoU with a ground-truth box is strictly above
`fg_iou` (0.5), background below `bg_iou` (0.4), ignored in between. There is no forced best-anchor match: a box that
no anchor overlaps by more than 0.5 gets no positive at all. Anchors are not clipped, and
the IoU denominator carries +1e-8.

Targets travel as the reference's collated batch does: boxes in the anchors' [-1, 1] units,
y first, padded at the FRONT with zero rows (label 0); a patch without boxes carries the
one-pixel dummy box [0, 0, 1, 1] with label 0. Unpadding keeps the rows from the first real
label on, or every row when there is none, so an empty patch is matched against zero boxes
and the dummy box: everything becomes background (the dummy box's IoU is < 0.01).
"""

from __future__ import annotations

import numpy as np
import torch

from ..network.box_coding import cthw_to_tlbr, encode, tlbr_to_cthw
from ..config import REFERENCE, DetectorConfig, Recipe

IGNORE = -2
BACKGROUND = -1
MITOTIC_LABEL = 1  # label 0 is padding, as in the reference's collation
DUMMY_BOX_PX = (0.0, 0.0, 1.0, 1.0)


def pixel_boxes_to_unit(boxes_xyxy: np.ndarray, size: int) -> torch.Tensor:
    """x1, y1, x2, y2 patch pixels -> (y1, x1, y2, x2) in [-1, 1]: v / (size / 2) - 1."""
    b = torch.as_tensor(np.asarray(boxes_xyxy, np.float32)).view(-1, 4)
    return b[:, [1, 0, 3, 2]] / (size / 2) - 1


def pixel_boxes_to_cthw(boxes_xyxy: np.ndarray, size: int) -> torch.Tensor:
    """XYXY patch pixels -> CTHW boxes in the anchors' [-1, 1] units (formats: midog.network.box_coding)."""
    return tlbr_to_cthw(pixel_boxes_to_unit(boxes_xyxy, size))


def collate_boxes(boxes: list[np.ndarray], size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-patch pixel boxes -> (B, L, 4) unit y-first boxes and (B, L) labels, padded at the
    front with zeros; an empty patch holds the dummy box with label 0."""
    units, labels = [], []
    for bx in boxes:
        if len(bx):
            units.append(pixel_boxes_to_unit(bx, size))
            labels.append(torch.full((len(bx),), MITOTIC_LABEL, dtype=torch.long))
        else:
            units.append(pixel_boxes_to_unit(np.asarray([DUMMY_BOX_PX]), size))
            labels.append(torch.zeros(1, dtype=torch.long))
    width = max(len(u) for u in units)
    out_b = torch.zeros(len(boxes), width, 4)
    out_l = torch.zeros(len(boxes), width, dtype=torch.long)
    for i, (u, lab) in enumerate(zip(units, labels)):
        out_b[i, width - len(u):] = u
        out_l[i, width - len(u):] = lab
    return out_b, out_l


def unpad(boxes_tlbr: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One patch's collated rows -> (cthw targets, class index = label - 1), keeping the
    rows from the first non-zero label on, or all rows when none is (the reference's quirk)."""
    nz = torch.nonzero(labels).flatten()
    first = int(nz.min()) if nz.numel() else 0
    return tlbr_to_cthw(boxes_tlbr[first:]), labels[first:] - 1


def iou_cthw(anchors: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(N, M) IoU of (cy, cx, h, w) boxes, with the reference's +1e-8 in the denominator
    (torchvision's box_iou has none; at a threshold that can flip a match)."""
    a, t = cthw_to_tlbr(anchors)[:, None], cthw_to_tlbr(targets)[None]
    sizes = (torch.min(a[..., 2:], t[..., 2:]) - torch.max(a[..., :2], t[..., :2])).clamp(min=0)
    inter = sizes[..., 0] * sizes[..., 1]
    union = (anchors[:, 2] * anchors[:, 3])[:, None] + (targets[:, 2] * targets[:, 3])[None] - inter
    return inter / (union + 1e-8)


def match(
    anchors: torch.Tensor, gt_cthw: torch.Tensor, fg_iou: float = Recipe.match_fg_iou, bg_iou: float = Recipe.match_bg_iou
) -> torch.Tensor:
    """(N,) index of the matched box for each anchor, BACKGROUND or IGNORE: foreground when
    the best IoU is > fg_iou (strictly), background when < bg_iou."""
    matches = torch.full((anchors.shape[0],), BACKGROUND, dtype=torch.long, device=anchors.device)
    if gt_cthw.numel() == 0:
        return matches
    best, idx = iou_cthw(anchors, gt_cthw).max(1)
    matches[best >= bg_iou] = IGNORE
    fg = best > fg_iou
    matches[fg] = idx[fg]
    return matches


def build_targets(
    anchors: torch.Tensor,
    boxes: list[np.ndarray],
    size: int,
    config: DetectorConfig = REFERENCE,
    fg_iou: float = Recipe.match_fg_iou,
    bg_iou: float = Recipe.match_bg_iou,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per patch: matches (B, N) and encoded box targets (B, N, 4) (valid where matched),
    through the reference's collation and unpadding."""
    collated, labels = collate_boxes(boxes, size)
    collated, labels = collated.to(anchors.device), labels.to(anchors.device)
    all_matches, all_targets = [], []
    for bx, lab in zip(collated, labels):
        gt, _ = unpad(bx, lab)
        m = match(anchors, gt, fg_iou, bg_iou)
        target = torch.zeros_like(anchors)
        fg = m >= 0
        if bool(fg.any()):
            target[fg] = encode(gt[m[fg]], anchors[fg], config)
        all_matches.append(m)
        all_targets.append(target)
    return torch.stack(all_matches), torch.stack(all_targets)
