"""Ranking metrics that use every candidate with its probability.

- Average precision as the MIDOG 2022 evaluator defines it: each point becomes a box of
  +-0.01125 mm (IoU 0.5 then means 7.5 um apart horizontally), scored COCO-style at IoU
  0.5 over all images together (torchmetrics' `map_50` with recall thresholds
  0, 0.01, ..., 1 and no detection limit).
- Threshold sweeps with the official F1 matching: precision, recall and F1 against the
  probability threshold, and AUCPR as the area under that precision-recall curve.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torchvision.ops import box_iou

from ..config import AP_BOX_HALF_SIZE_MM, AP_IOU
from .io import Candidates
from .metrics import score_case

# The 2022 evaluator passes np.arange(0, 1.01, 0.01) to torchmetrics; kept bit for bit
# because searchsorted on recall values like 0.07 depends on the last float digit.
RECALL_THRESHOLDS = np.arange(0, 1.01, 0.01)


@dataclass(frozen=True)
class ImageMatches:
    """One image's candidates after COCO matching, in descending score order."""

    scores: np.ndarray
    is_tp: np.ndarray
    n_gt: int


def points_to_boxes(points: np.ndarray, half_size: float = AP_BOX_HALF_SIZE_MM) -> np.ndarray:
    """(n, >=2) points -> (n, 4) boxes [x1, y1, x2, y2]."""
    xy = np.asarray(points, float).reshape(len(points), -1)[:, :2] if len(points) else np.zeros((0, 2))
    return np.hstack([xy - half_size, xy + half_size])


def match_image(
    ground_truth: np.ndarray, points: np.ndarray, scores: np.ndarray, iou_threshold: float = AP_IOU
) -> ImageMatches:
    """COCO greedy matching: candidates by descending score (stable), each takes the unused
    ground truth of highest IoU >= threshold (on ties the later one, as pycocotools does)."""
    scores = np.asarray(scores, float)
    order = np.argsort(-scores, kind="mergesort")
    is_tp = np.zeros(len(order), bool)
    if len(ground_truth) and len(order):
        iou = box_iou(torch.from_numpy(points_to_boxes(np.asarray(points)[order])), torch.from_numpy(points_to_boxes(ground_truth))).numpy()
        used = np.zeros(len(ground_truth), bool)
        for d in range(len(order)):
            row = np.where(used | (iou[d] < iou_threshold), -1.0, iou[d])
            if row.max() < 0:
                continue
            g = len(row) - 1 - int(np.argmax(row[::-1]))
            used[g] = True
            is_tp[d] = True
    return ImageMatches(scores[order], is_tp, len(ground_truth))


def average_precision(matches: Iterable[ImageMatches]) -> float | None:
    """COCO 101-point interpolated AP over all images; None without ground truth."""
    matches = list(matches)
    n_gt = sum(m.n_gt for m in matches)
    if n_gt == 0:
        return None
    scores = np.concatenate([m.scores for m in matches]) if matches else np.zeros(0)
    if len(scores) == 0:
        return 0.0
    is_tp = np.concatenate([m.is_tp for m in matches])[np.argsort(-scores, kind="mergesort")]
    tp = np.cumsum(is_tp)
    fp = np.cumsum(~is_tp)
    recall = tp / n_gt
    precision = tp / (tp + fp + np.spacing(1))
    # Interpolated precision: the best precision at this recall or any higher one.
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    idx = np.searchsorted(recall, RECALL_THRESHOLDS, side="left")
    sampled = np.where(idx < len(precision), precision[np.minimum(idx, len(precision) - 1)], 0.0)
    return float(sampled.mean())


@dataclass(frozen=True)
class Sweep:
    """Official-rule counts of each image at each probability threshold (detection: p >= t)."""

    thresholds: np.ndarray  # (T,) ascending
    counts: dict[str, np.ndarray]  # image -> (T, 3) int: TP, FP, FN

    def totals(self, images: Iterable[str]) -> np.ndarray:
        """(T, 3) TP, FP, FN summed over `images`."""
        out = np.zeros((len(self.thresholds), 3), np.int64)
        for name in images:
            out += self.counts[name]
        return out


def sweep_thresholds(candidates: Iterable[Candidates], max_thresholds: int = 1000) -> np.ndarray:
    """The probabilities that occur, thinned to at most `max_thresholds` (by quantile)."""
    probs = np.concatenate([c.probability for c in candidates] + [np.zeros(0)])
    levels = np.unique(probs)
    if len(levels) > max_thresholds:
        # Quantiles of the values themselves, so every threshold is a real probability.
        levels = np.unique(np.quantile(probs, np.linspace(0, 1, max_thresholds), method="inverted_cdf"))
    return levels


def sweep_image(ground_truth: np.ndarray, candidates: Candidates, thresholds: np.ndarray) -> np.ndarray:
    """(T, 3) TP, FP, FN of one image with detections = candidates of probability >= t."""
    # The result only changes at this image's own probabilities: score each once.
    levels = np.unique(candidates.probability)
    per_level = np.array(
        [tuple(score_case(ground_truth, candidates.points[candidates.probability >= lv])) for lv in levels]
        + [tuple(score_case(ground_truth, np.zeros((0, 3))))],
        dtype=np.int64,
    ).reshape(-1, 3)
    tp_fn_fp = per_level[np.searchsorted(levels, thresholds, side="left")]
    return tp_fn_fp[:, [0, 2, 1]]  # DetectionScore order is TP, FN, FP


def sweep(
    ground_truth: Mapping[str, np.ndarray], candidates: Mapping[str, Candidates], thresholds: np.ndarray
) -> Sweep:
    """Sweep every image of `candidates` (keys must be ground-truth names)."""
    thresholds = np.asarray(thresholds, float)
    return Sweep(thresholds, {n: sweep_image(ground_truth[n], c, thresholds) for n, c in candidates.items()})


def curve(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """precision, recall, F1 arrays from (T, 3) TP/FP/FN; NaN where undefined."""
    tp, fp, fn = (counts[:, i].astype(float) for i in range(3))
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(tp + fp > 0, tp / (tp + fp), np.nan)
        recall = np.where(tp + fn > 0, tp / (tp + fn), np.nan)
        f1 = np.where(2 * tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), np.nan)
    return precision, recall, f1


def aucpr(precision: Sequence[float], recall: Sequence[float]) -> float | None:
    """Trapezoidal area under a swept precision-recall curve.

    The curve starts at recall 0 with the precision of the strictest threshold (not 1.0,
    which would reward a detector for a point it never reached). Points where precision is
    undefined (no detections left) are dropped.
    """
    p, r = np.asarray(precision, float), np.asarray(recall, float)
    ok = np.isfinite(p) & np.isfinite(r)
    if not ok.any():
        return None
    p, r = p[ok], r[ok]
    order = np.lexsort((-p, r))  # by recall, and at equal recall from high to low precision
    p, r = p[order], r[order]
    p = np.concatenate([[p[0]], p])
    r = np.concatenate([[0.0], r])
    return float(np.sum(np.diff(r) * (p[1:] + p[:-1]) / 2))
