"""Network outputs -> boxes in image pixels: threshold, per-tile IoU NMS, pixel boxes,
whole-image distance NMS (docs/reference-algorithm.md#thresholds-and-nms), with the reference's arithmetic."""

from __future__ import annotations

from typing import NamedTuple

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


class BatchBoxes(NamedTuple):
    """The kept boxes of a whole batch of tiles, on the CPU: `tile` (K,) is each box's index
    in the batch, ascending; within a tile, boxes are in `tile_boxes`' order (best first)."""

    tile: np.ndarray  # (K,) int64
    boxes: np.ndarray  # (K, 4) int64 XYXY in tile pixels
    scores: np.ndarray  # (K,) float32
    classes: np.ndarray  # (K,) int64


def batch_tile_boxes(
    class_logits: torch.Tensor,
    box_deltas: torch.Tensor,
    anchors: torch.Tensor,
    threshold: float,
    config: DetectorConfig = REFERENCE,
) -> BatchBoxes:
    """`tile_boxes` for a whole batch, (B, N, C) logits and (B, N, 4) deltas, in one pass on
    their device and one transfer of the kept boxes to the host.

    Sigmoid, threshold, decoding, clamping and the pixel truncation run once over the batch;
    each is elementwise, so every box gets the arithmetic of `tile_boxes` to the bit
    (tests/test_postprocess.py compares them). The per-tile IoU NMS is one C++ `nms` call
    per tile on the batch's kept boxes, not torchvision's `batched_nms` keyed by tile: for
    small inputs that shifts each tile's float32 corners by an offset, which rounds them and
    can move an IoU across the limit, and for large ones it re-sorts the survivors, which
    reorders exact score ties (measured: different outputs on random tiles either way).
    """
    scores, classes = torch.sigmoid(class_logits).max(-1)
    tile, anchor = (scores > threshold).nonzero(as_tuple=True)  # row-major: tile ascending
    if tile.numel() == 0:
        empty = np.zeros(0, np.int64)
        return BatchBoxes(empty, empty.reshape(0, 4), np.zeros(0, np.float32), empty)
    boxes = decode(box_deltas[tile, anchor], anchors[anchor], config)
    # Clamp in corner form and back, as tile_boxes does (the round trip is not exact).
    boxes = tlbr_to_cthw(torch.clamp(cthw_to_tlbr(boxes), -1, 1))
    scores, classes = scores[tile, anchor], classes[tile, anchor]
    corners = yx_to_xy(cthw_to_tlbr(boxes))
    counts = torch.bincount(tile, minlength=class_logits.shape[0]).tolist()
    starts = np.cumsum([0, *counts[:-1]]).tolist()
    order = torch.cat([nms(corners[s : s + n], scores[s : s + n], config.tile_nms_iou) + s for s, n in zip(starts, counts) if n])
    boxes, scores, classes, tile = boxes[order], scores[order], classes[order], tile[order]
    half = config.tile_size / 2
    top_left = ((boxes[:, :2] - boxes[:, 2:] / 2 + 1) * half).long()
    size = (boxes[:, 2:] * half).long()
    y1, x1, h, w = top_left[:, 0], top_left[:, 1], size[:, 0], size[:, 1]
    # One transfer: the scores' float32 bits travel as integers beside the boxes.
    bits = scores.contiguous().view(torch.int32).long()
    packed = torch.stack([tile, x1, y1, x1 + w, y1 + h, classes, bits], 1).cpu().numpy()
    return BatchBoxes(packed[:, 0], packed[:, 1:5], packed[:, 6].astype(np.int32).view(np.float32), packed[:, 5])


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
