"""Network outputs -> boxes in image pixels: threshold, per-tile IoU NMS, pixel boxes,
whole-image distance NMS (docs/reference-algorithm.md#thresholds-and-nms), with the reference's arithmetic."""

from __future__ import annotations

import numpy as np
import torch
from scipy.spatial import cKDTree
from torchvision.ops import nms

from .box_coding import cthw_to_tlbr, decode, tlbr_to_cthw, yx_to_xy
from ..config import REFERENCE, DetectorConfig


def tile_boxes(
    class_logits: torch.Tensor,
    box_deltas: torch.Tensor,
    anchors: torch.Tensor,
    threshold: float,
    config: DetectorConfig = REFERENCE,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One tile's outputs -> (boxes (K, 4) int64 XYXY in tile pixels, scores, classes),
    in descending score order.

    Scores are the max sigmoid over the class columns; kept when > threshold.
    """
    scores, classes = torch.sigmoid(class_logits).max(1)
    keep = scores > threshold
    if not bool(keep.any()):
        empty = torch.empty(0, dtype=torch.int64)
        return empty.view(0, 4), torch.empty(0), empty
    boxes = decode(box_deltas[keep], anchors[keep], config)
    # Clamp in corner form then return to centre form, as the reference does: the round trip
    # is not exact in float32 and the pixel truncation below depends on it.
    boxes = tlbr_to_cthw(torch.clamp(cthw_to_tlbr(boxes), -1, 1))
    scores, classes = scores[keep], classes[keep]
    order = nms(yx_to_xy(cthw_to_tlbr(boxes)), scores, config.tile_nms_iou)
    boxes, scores, classes = boxes[order], scores[order], classes[order]
    half = config.tile_size / 2
    top_left = ((boxes[:, :2] - boxes[:, 2:] / 2 + 1) * half).long()
    size = (boxes[:, 2:] * half).long()
    y1, x1, h, w = top_left[:, 0], top_left[:, 1], size[:, 0], size[:, 1]
    return torch.stack([x1, y1, x1 + w, y1 + h], 1).cpu(), scores.cpu(), classes.cpu()


def distance_nms(boxes: np.ndarray, scores: np.ndarray, radius: float, min_score: float) -> np.ndarray:
    """Indices of boxes kept by greedy whole-image NMS on centre distance (<= radius is a
    duplicate), considering only scores > min_score; in descending score order."""
    candidates = np.flatnonzero(scores > min_score)
    if candidates.size == 0:
        return candidates
    b = boxes[candidates].astype(np.float64)
    centres = np.stack([b[:, 0] + (b[:, 2] - b[:, 0]) / 2, b[:, 1] + (b[:, 3] - b[:, 1]) / 2], 1)
    # Neighbours are looked up only for boxes that are kept (a tenth of them on dense
    # images): 4x faster than querying every box first. Inclusive like the reference's
    # sklearn query_radius; centres lie on a half-pixel grid, so distances of exactly 25 px
    # compare exactly in float64 either way.
    tree = cKDTree(centres)
    # Same ordering call as the reference, so exact ties resolve the same way.
    order = np.argsort(scores[candidates])[::-1]
    suppressed = np.zeros(candidates.size, bool)
    kept = []
    for i in order.tolist():
        if not suppressed[i]:
            kept.append(i)
            suppressed[tree.query_ball_point(centres[i], radius)] = True
    return candidates[np.asarray(kept, dtype=np.int64)]
