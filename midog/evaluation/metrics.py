"""The official MIDOG 2021 F1 (docs/reference-algorithm.md#official-metric), scored by the challenge's own `score_detection`.

Matching is evalutils 0.4.2's: ground truth visited in order, each takes its nearest
unused prediction within 7.5 um (inclusive). TP/FP/FN are summed over the images and only
then turned into precision, recall and F1 - never averaged per image.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
from evalutils.scorers import DetectionScore, score_detection

from ..config import MATCH_RADIUS_MM

__all__ = ["DetectionScore", "score_case", "score_cases", "totals", "rates", "case_entry"]


def score_case(ground_truth: np.ndarray, detections: np.ndarray, radius: float = MATCH_RADIUS_MM) -> DetectionScore:
    """TP/FN/FP of one image; points (n, 2 or 3) in mm."""
    # The scorer takes lists of tuples, exactly what the official evaluator passes.
    gt = [tuple(map(float, p)) for p in np.asarray(ground_truth, float)]
    pred = [tuple(map(float, p)) for p in np.asarray(detections, float)]
    return score_detection(ground_truth=gt, predictions=pred, radius=radius)


def score_cases(
    ground_truth: Mapping[str, np.ndarray],
    detections: Mapping[str, np.ndarray],
    count_missing: bool = False,
) -> tuple[dict[str, DetectionScore], list[str]]:
    """Score every ground-truth image; returns (scores, skipped images).

    The official evaluator skips an image that has no prediction entry at all (it is not
    counted, not even as missed). `count_missing=True` scores it as an empty prediction,
    so all its mitotic figures become false negatives.
    """
    scores, skipped = {}, []
    for name, gt in ground_truth.items():
        if name in detections:
            scores[name] = score_case(gt, detections[name])
        elif count_missing:
            scores[name] = score_case(gt, np.zeros((0, 3)))
        else:
            skipped.append(name)
    return scores, skipped


def totals(scores: Iterable[DetectionScore]) -> tuple[int, int, int]:
    """(TP, FP, FN) summed over images."""
    tp = fp = fn = 0
    for s in scores:
        tp += s.true_positives
        fp += s.false_positives
        fn += s.false_negatives
    return tp, fp, fn


def _ratio(num: float, den: float) -> float | None:
    # The 2021 evaluator divides plainly (no epsilon); an undefined rate is None (JSON null)
    # rather than a crash or the 2022 evaluator's epsilon-made 1.0.
    return num / den if den else None


def rates(tp: int, fp: int, fn: int) -> dict[str, float | None]:
    """precision, recall and f1_score = 2TP / (2TP + FP + FN), under the evaluator's key names."""
    return {
        "precision": _ratio(tp, tp + fp),
        "recall": _ratio(tp, tp + fn),
        "f1_score": _ratio(2 * tp, 2 * tp + fp + fn),
    }


def case_entry(score: DetectionScore) -> dict[str, int | float | None]:
    """One image's entry in metrics.json: the evaluator's three counts plus its rates."""
    entry: dict[str, int | float | None] = dict(score._asdict())
    entry.update(rates(score.true_positives, score.false_positives, score.false_negatives))
    return entry
