"""Where the demo weights' detections sit against synthetic ground truth, in x and y (issue 26).

1. Training targets through decoding: a box's encoded targets, fed back as perfect network
   outputs, come out of the detector's post-processing at their centre less the reference's
   integer truncation (about 0.5 px, x and y alike).
2. Detect (demo weights, CPU) on synthetic regions and on their mirror images, figures matched
   within 25 px: an offset added by our arithmetic or by the figures' look would stay to the
   left in both; an offset learned by the network in its own frame mirrors with the image.

    PYTHONPATH=. python benchmarks/xbias.py [regions (default 6)]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
import tifffile
import torch

from midog.config import REFERENCE
from midog.detector.core import Detector
from midog.network.anchors import make_anchors
from midog.network.postprocess import tile_boxes
from midog.synth.dataset import synth_image
from midog.training.matching import build_targets

S = REFERENCE.tile_size
anchors = make_anchors(REFERENCE, S)
rng = np.random.default_rng(0)
trip = []
for _ in range(200):
    c = rng.uniform(40, S - 40, 2)
    matches, targets = build_targets(anchors, [np.array([[c[0] - 25, c[1] - 25, c[0] + 25, c[1] + 25]], np.float32)], S)
    logits = torch.full((len(anchors), 1), -20.0)
    logits[matches[0] >= 0] = 20.0
    b = tile_boxes(logits, targets[0], anchors, 0.5)[0][0].numpy().astype(float)
    trip.append([(b[0] + b[2]) / 2 - c[0], (b[1] + b[3]) / 2 - c[1]])
print("targets -> decoding, centre error (px) x, y: mean", np.mean(trip, 0).round(2).tolist(), flush=True)

detector = Detector.from_weights(Path(__file__).resolve().parent.parent / "weights" / "demo-synthetic.pth", device="cpu")
SIZE, SPACING = 1024, 0.00025
rows: dict[str, list] = {"plain": [], "mirrored": []}
with tempfile.TemporaryDirectory() as folder:
    for seed in range(int(sys.argv[1]) if len(sys.argv) > 1 else 6):
        rgb, objects = synth_image(seed, 0, SIZE, SIZE)
        figures = np.array([[o.x + 0.5, o.y + 0.5] for o in objects if o.category_id == 1])  # pixel centres
        for kind, img in (("plain", rgb), ("mirrored", rgb[:, ::-1])):
            path = Path(folder) / f"{seed}-{kind}.tiff"
            tifffile.imwrite(path, np.ascontiguousarray(img), photometric="rgb", resolution=(10 / SPACING,) * 2, resolutionunit="CENTIMETER")
            xy = detector.detect(path, min_score=0.3).xy_mm / SPACING
            if kind == "mirrored":
                xy[:, 0] = SIZE - xy[:, 0]  # back into the plain image's frame
            for f in figures:
                d = np.hypot(*(xy - f).T) if len(xy) else np.zeros(0)
                if len(d) and d.min() < 25:
                    rows[kind].append((xy[np.argmin(d)] - f).tolist())
for kind, found in rows.items():
    print(f"{kind}: {len(found)} figures matched, detection - truth (px, in the plain image's frame) x, y: mean {np.mean(found, 0).round(2).tolist()}")
