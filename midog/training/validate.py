"""Validation each epoch: whole validation images through the detection pipeline, scored
by the official matching (AUCPR, F1 per threshold, the operating point), plus losses on
fixed validation patches (detection loss, and the domain loss that measures confusion).

The operating point is the threshold with the best mean F1 over the labelled validation
scanners (docs/reference-algorithm.md#training-recipe); among equal maxima the middle one, so a plateau of thresholds
gives the most robust choice rather than its edge.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..config import REFERENCE, DetectorConfig
from ..detector.core import Detector
from ..detector.detections import Detections
from .data import ImageRecord

THRESHOLDS = np.round(np.arange(0.05, 1.0, 0.01), 2)


def validation_detector(model: torch.nn.Module, config: DetectorConfig = REFERENCE) -> Detector:
    """The inference core around the model being trained, as `midog detect` runs it
    (float32, BatchNorm folded into a copy): validation scores exactly the outputs that the
    saved checkpoint will give. Any --amp applies to training steps only."""
    return Detector(model, config=config)


def predict_image(detector: Detector, record: ImageRecord, min_score: float = 0.05) -> Detections:
    """Candidates of one image as `midog detect` finds them, but down to `min_score` so the
    precision-recall curve is complete."""
    return detector.detect(record.path, min_score=min_score)


def ground_truth_mm(record: ImageRecord, spacing: tuple[float, float]) -> np.ndarray:
    """Mitotic-figure box centres in mm, z = 0 (the official ground-truth form)."""
    m = record.mitoses().astype(np.float64)
    xy = np.stack([(m[:, 0] + m[:, 2]) / 2 * spacing[0], (m[:, 1] + m[:, 3]) / 2 * spacing[1]], 1) if len(m) else np.zeros((0, 2))
    return np.column_stack([xy, np.zeros(len(xy))])


@dataclass
class DetectionMetrics:
    aucpr: float  # mean over scanners
    f1: float  # pooled over all validation images at `threshold`
    mean_f1: float  # mean over scanners at `threshold`, what the threshold maximises
    threshold: float
    per_scanner: dict[str, dict[str, float]]


def operating_point(thresholds: np.ndarray, mean_f1: np.ndarray) -> int:
    """Index of the best mean F1; the middle of the tied maxima."""
    f = np.nan_to_num(mean_f1, nan=-1.0)
    best = np.flatnonzero(f >= f.max() - 1e-12)
    return int(best[len(best) // 2])


def detection_metrics(
    candidates: dict[str, tuple[np.ndarray, np.ndarray]],
    ground_truth: dict[str, np.ndarray],
    scanners: dict[str, str],
    thresholds: np.ndarray = THRESHOLDS,
) -> DetectionMetrics:
    """candidates: image -> (points mm (n, 3), scores); scanners: image -> scanner."""
    from ..evaluation.ap import aucpr, curve, sweep
    from ..evaluation.io import Candidates

    cands = {n: Candidates(p, s.astype(float), np.ones(len(s), bool)) for n, (p, s) in candidates.items()}
    sw = sweep(ground_truth, cands, thresholds)
    names = sorted(set(scanners[n] for n in cands))
    per, f1s = {}, []
    for sc in names:
        prec, rec, f1 = curve(sw.totals([n for n in cands if scanners[n] == sc]))
        per[sc] = {"aucpr": aucpr(prec, rec) or 0.0}
        f1s.append(f1)
    mean_f1 = np.nanmean(np.stack(f1s), 0) if f1s else np.full(len(thresholds), np.nan)
    i = operating_point(thresholds, mean_f1)
    for sc, f1 in zip(names, f1s):
        per[sc]["f1"] = float(np.nan_to_num(f1[i]))
    _, _, pooled = curve(sw.totals(cands))
    return DetectionMetrics(
        aucpr=float(np.mean([v["aucpr"] for v in per.values()])) if per else 0.0,
        f1=float(np.nan_to_num(pooled[i])),
        mean_f1=float(np.nan_to_num(mean_f1[i])),
        threshold=float(thresholds[i]),
        per_scanner=per,
    )


def evaluate_images(
    model: torch.nn.Module,
    records: list[ImageRecord],
    config: DetectorConfig = REFERENCE,
    min_score: float = 0.05,
) -> DetectionMetrics:
    candidates, gt, scanners = {}, {}, {}
    detector = validation_detector(model, config)  # its GPU precision flags apply to its own forward only
    for r in records:
        found = predict_image(detector, r, min_score)
        mm = found.xy_mm
        candidates[r.file_name] = (np.column_stack([mm, np.zeros(len(mm))]), found.scores)
        gt[r.file_name] = ground_truth_mm(r, found.spacing_mm)
        scanners[r.file_name] = r.scanner
    return detection_metrics(candidates, gt, scanners)
