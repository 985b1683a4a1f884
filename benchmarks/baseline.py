"""A naive reference-style pipeline, the yardstick for benchmarks/run.py.

It does what the reference container does, written fresh: the whole image read into
memory with SimpleITK, every tile of the reference grid (duplicates included) in batches
of 10, float32, NCHW, one batch after another with no overlap of reading and compute.
Per-tile post-processing is the same code as ours; the whole-image distance NMS is the
reference's formulation (every box's neighbours from sklearn's KDTree, then a greedy pass).
Without SimpleITK (the GPU machines have none) the image is read whole with tifffile.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.neighbors import KDTree

from midog.network.anchors import make_anchors
from midog.config import REFERENCE
from midog.detector.detections import Detections
from midog.network.retinanet import load_model
from midog.network.postprocess import tile_boxes


def reference_origins(width: int, height: int, size: int = 512, stride: int = 460) -> list[tuple[int, int]]:
    origins = []
    for x in np.arange(0, width, stride):
        for y in np.arange(0, height, stride):
            origins.append((int(x if x + size <= width else width - size), int(y if y + size <= height else height - size)))
    return origins


def read_whole(path: str) -> tuple[np.ndarray, tuple[float, float]]:
    try:
        import SimpleITK as sitk
    except ImportError:
        from midog.slides.spacing import tiff_spacing_mm
        import tifffile

        return tifffile.imread(path)[:, :, :3], tiff_spacing_mm(path)
    image = sitk.ReadImage(path)
    return sitk.GetArrayFromImage(image)[:, :, :3], image.GetSpacing()[:2]


def distance_nms(boxes: np.ndarray, scores: np.ndarray, radius: float, min_score: float) -> np.ndarray:
    candidates = np.flatnonzero(scores > min_score)
    b = boxes[candidates].astype(np.float64)
    centres = np.stack([b[:, 0] + (b[:, 2] - b[:, 0]) / 2, b[:, 1] + (b[:, 3] - b[:, 1]) / 2], 1)
    neighbours = KDTree(centres).query_radius(centres, r=radius)
    suppressed = np.zeros(len(candidates), bool)
    kept = []
    for i in np.argsort(scores[candidates])[::-1]:
        if not suppressed[i]:
            kept.append(i)
            suppressed[neighbours[i]] = True
    return candidates[np.asarray(kept, dtype=np.int64)]


class BaselineDetector:
    def __init__(self, weights: str, device: str = "cpu") -> None:
        self.device = torch.device(device)
        # The reference computes in float32 (torch 1.6 on a T4 has no TF32). PyTorch's default
        # TF32 for cuDNN convolutions moved 3% of the detections by over 1 px on an H200.
        torch.backends.cudnn.allow_tf32 = False
        self.model, meta = load_model(weights, self.device)
        self.threshold = float(meta.get("threshold", REFERENCE.threshold))
        self.anchors = make_anchors().to(self.device)
        self.mean = torch.tensor(REFERENCE.mean).view(1, 3, 1, 1)
        self.std = torch.tensor(REFERENCE.std).view(1, 3, 1, 1)

    def detect(self, path: str) -> Detections:
        pixels, spacing = read_whole(path)
        height, width = pixels.shape[:2]
        origins = reference_origins(width, height)
        boxes, scores = [], []
        for start in range(0, len(origins), 10):
            chunk = origins[start : start + 10]
            tiles = np.stack([pixels[y : y + 512, x : x + 512] for x, y in chunk]) / 255.0
            batch = (torch.from_numpy(tiles.astype(np.float32)).permute(0, 3, 1, 2) - self.mean) / self.std
            with torch.no_grad():
                logits, deltas = self.model(batch.to(self.device))
            for (x, y), lg, dl in zip(chunk, logits, deltas):
                b, s, _ = tile_boxes(lg, dl, self.anchors, 0.4)
                boxes.append(b.numpy() + np.array([x, y, x, y]))
                scores.append(s.numpy())
        boxes_a, scores_a = np.concatenate(boxes), np.concatenate(scores)
        keep = distance_nms(boxes_a, scores_a, 25, 0.4)
        return Detections(boxes_a[keep], scores_a[keep], np.zeros(len(keep), int), spacing)
