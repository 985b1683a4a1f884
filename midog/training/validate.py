"""Validation each epoch: whole validation images through the detection pipeline, scored
by the official matching (AUCPR, F1 per threshold, the operating point), plus losses on
fixed validation patches (detection loss, and the domain loss that measures confusion).

The operating point is the threshold with the best mean F1 over the labelled validation
scanners (docs/reference-algorithm.md#training-recipe); among equal maxima the middle one, so a plateau of thresholds
gives the most robust choice rather than its edge.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np
import torch

from ..config import REFERENCE, DetectorConfig
from .data import ImageRecord

THRESHOLDS = np.round(np.arange(0.05, 1.0, 0.01), 2)


def autocast(device: torch.device, amp: str | None) -> contextlib.AbstractContextManager:
    if not amp:
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


@torch.no_grad()
def predict_image(
    model: torch.nn.Module,
    record: ImageRecord,
    device: torch.device,
    config: DetectorConfig = REFERENCE,
    min_score: float = 0.05,
    amp: str | None = None,
) -> tuple[np.ndarray, np.ndarray, tuple[float, float]]:
    """Candidates of one image as `midog detect` finds them, but down to `min_score` so
    the precision-recall curve is complete: (points (n, 2) pixels, scores, spacing mm)."""
    from ..anchors import make_anchors
    from ..postprocess import distance_nms, tile_boxes
    from ..slide import open_slide
    from ..tiles import Normalizer, read_tile, tile_origins

    anchors = make_anchors(config).to(device)
    normalize = Normalizer(config, device)
    boxes, scores = [], []
    with open_slide(record.path) as slide:
        origins = tile_origins(slide.width, slide.height, config)
        for start in range(0, len(origins), config.batch_size):
            chunk = origins[start : start + config.batch_size]
            tiles = normalize(torch.from_numpy(np.stack([read_tile(slide, x, y, config) for x, y in chunk])).to(device))
            with autocast(device, amp):
                logits, deltas = model(tiles)
            for (x, y), lg, dl in zip(chunk, logits.float(), deltas.float()):
                b, s, _ = tile_boxes(lg, dl, anchors, min_score, config)
                boxes.append(b.numpy() + np.array([x, y, x, y]))
                scores.append(s.numpy())
        width, height, spacing = slide.width, slide.height, slide.spacing_mm
    b = np.concatenate(boxes) if boxes else np.zeros((0, 4), np.int64)
    s = np.concatenate(scores) if scores else np.zeros(0, np.float32)
    centre = np.stack([(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2], 1) if len(b) else np.zeros((0, 2))
    inside = (centre[:, 0] < width) & (centre[:, 1] < height)
    b, s, centre = b[inside], s[inside], centre[inside]
    keep = distance_nms(b, s, config.distance_nms_px, min_score)
    return centre[keep], s[keep], spacing


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
    device: torch.device,
    config: DetectorConfig = REFERENCE,
    min_score: float = 0.05,
    amp: str | None = None,
) -> DetectionMetrics:
    candidates, gt, scanners = {}, {}, {}
    for r in records:
        pts, scores, spacing = predict_image(model, r, device, config, min_score, amp)
        mm = np.column_stack([pts[:, 0] * spacing[0], pts[:, 1] * spacing[1], np.zeros(len(pts))])
        candidates[r.file_name] = (mm, scores)
        gt[r.file_name] = ground_truth_mm(r, spacing)
        scanners[r.file_name] = r.scanner
    return detection_metrics(candidates, gt, scanners)
