"""A naive reference-style pipeline, the yardstick for benchmarks/run.py.

It does what the reference container does, written fresh: the whole image read into
memory with SimpleITK, every tile of the reference grid (duplicates included) in batches
of 10, float32, NCHW, one batch after another with no overlap of reading and compute.
Post-processing is the same code as ours, so only the pipeline around the network differs.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
import torch

from midog.anchors import make_anchors
from midog.config import REFERENCE
from midog.detections import Detections
from midog.network import load_model
from midog.postprocess import distance_nms, tile_boxes


def reference_origins(width: int, height: int, size: int = 512, stride: int = 460) -> list[tuple[int, int]]:
    origins = []
    for x in np.arange(0, width, stride):
        for y in np.arange(0, height, stride):
            origins.append((int(x if x + size <= width else width - size), int(y if y + size <= height else height - size)))
    return origins


class BaselineDetector:
    def __init__(self, weights: str, device: str = "cpu") -> None:
        self.device = torch.device(device)
        self.model, _ = load_model(weights, self.device)
        self.anchors = make_anchors().to(self.device)
        self.mean = torch.tensor(REFERENCE.mean).view(1, 3, 1, 1)
        self.std = torch.tensor(REFERENCE.std).view(1, 3, 1, 1)

    def detect(self, path: str) -> Detections:
        image = sitk.ReadImage(path)
        pixels = sitk.GetArrayFromImage(image)[:, :, :3]
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
        return Detections(boxes_a[keep], scores_a[keep], np.zeros(len(keep), int), image.GetSpacing()[:2])
