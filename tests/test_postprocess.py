"""Normalisation and post-processing against the reference's own formulation, on inputs built
to hit their edge cases."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from torchvision.ops import nms

from midog.network.anchors import make_anchors
from midog.network.postprocess import distance_nms, tile_boxes

# The benchmark's baseline keeps the reference's formulation of the distance NMS.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from baseline import distance_nms as reference_distance_nms  # noqa: E402


def test_distance_nms_equals_reference_formulation_with_exact_radius_pairs():
    rng = np.random.default_rng(3)
    # Integer corners with odd and even sizes put centres on the half-pixel grid; a 3-4-5
    # lattice of step 5 makes many pairs exactly 25 px apart (15-20-25 and 0-25).
    n = 4000
    cx = rng.integers(0, 60, n) * 5 + rng.integers(0, 2, n) * 0.5
    cy = rng.integers(0, 60, n) * 5
    half = rng.integers(5, 20, n)
    boxes = np.stack([cx - half, cy - half, cx + half, cy + half], 1).round().astype(np.int64)
    # Ties in score too: the tie order must follow the reference's argsort call.
    scores = (rng.integers(0, 200, n) / 200).astype(np.float32)
    b = boxes.astype(float)
    d = np.hypot(*((b[:, None, :2] + b[:, None, 2:]) / 2 - (b[None, :, :2] + b[None, :, 2:]) / 2).transpose(2, 0, 1))
    assert (d == 25.0).sum() > 1000, "the input must contain pairs at exactly the radius"
    ours, ref = distance_nms(boxes, scores, 25.0, 0.4), reference_distance_nms(boxes, scores, 25.0, 0.4)
    assert len(ref) > 50
    np.testing.assert_array_equal(ours, ref)
    assert distance_nms(boxes, scores, 25.0, 1.0).size == 0


def test_tile_boxes_keeps_nms_survivors_best_first_in_pixels():
    torch.manual_seed(0)
    anchors = make_anchors()
    logits = torch.randn(len(anchors), 2) * 2
    deltas = torch.randn(len(anchors), 4)
    boxes, scores, classes = tile_boxes(logits, deltas, anchors, 0.4)
    assert len(scores) > 100 and bool((scores[:-1] >= scores[1:]).all()) and bool((scores > 0.4).all())
    assert boxes.dtype == torch.int64 and int(boxes.min()) >= 0 and int(boxes.max()) <= 512
    # Survivors of greedy NMS overlap no better-scored survivor by more than the IoU limit.
    again = nms(boxes.double(), scores.double(), 0.4 + 0.05)
    assert len(again) >= len(scores) * 0.95
    assert tile_boxes(logits, deltas, anchors, 1.0)[0].shape == (0, 4)


def test_normalizer_reproduces_the_reference_float64_route_for_every_value():
    from midog.config import REFERENCE
    from midog.detector.tiles import Normalizer

    values = np.arange(256, dtype=np.uint8)
    tiles = torch.from_numpy(np.stack([values, values[::-1], np.roll(values, 7)], -1).reshape(1, 16, 16, 3))
    ours = Normalizer()(tiles)
    # The reference: patch / 255 in float64, cast to float32, then (v - mean) / std in float32.
    scaled = torch.from_numpy((tiles.numpy() / 255.0).astype(np.float32)).permute(0, 3, 1, 2)
    mean = torch.tensor(REFERENCE.mean, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(REFERENCE.std, dtype=torch.float32).view(1, 3, 1, 1)
    assert torch.equal(ours, (scaled - mean) / std)
    assert ours.is_contiguous(memory_format=torch.channels_last)
