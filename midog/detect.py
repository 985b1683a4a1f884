"""The detection pipeline: image -> tiles -> network -> boxes -> points (`midog detect`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

from .config import REFERENCE, DetectorConfig
from .detections import Detections
from .errors import MidogError

PROJECT_ROOT = Path(__file__).resolve().parent.parent
PUBLISHED_WEIGHTS = PROJECT_ROOT / "weights" / "RetinaNetDA.pth"


def pick_device(device: str = "auto") -> "torch.device":
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise MidogError("--device cuda was asked for, but PyTorch sees no CUDA device")
    return torch.device(device)


class Detector:
    """A loaded network plus the reference's tiling and post-processing.

    `threshold` defaults to the checkpoint's own operating point (its metadata) and else
    to the reference's 0.64.
    """

    def __init__(
        self,
        weights: str | Path,
        device: str = "auto",
        threshold: float | None = None,
        config: DetectorConfig = REFERENCE,
    ) -> None:
        import torch

        from .anchors import make_anchors
        from .network import load_model
        from .tiles import Normalizer

        self.config = config
        self.device = pick_device(device)
        self.model, self.meta = load_model(weights, self.device, config)
        self.threshold = float(threshold if threshold is not None else self.meta.get("threshold", config.threshold))
        self.anchors = make_anchors(config).to(self.device)
        self.normalize = Normalizer(config, self.device)
        self._torch = torch

    @property
    def candidate_threshold(self) -> float:
        # Candidates for the 2022 output; below the operating point, never above it. Greedy NMS
        # keeps a box only for higher-scoring ones, so the points above the threshold are the
        # same whichever of the two thresholds the NMS runs on.
        return min(self.config.candidate_threshold, self.threshold)

    def detect(self, image: str | Path, mpp: float | None = None, progress: bool = False) -> Detections:
        """Every candidate above `candidate_threshold` after both NMS stages, best first."""
        from tqdm import tqdm

        from .postprocess import distance_nms, tile_boxes
        from .slide import open_slide
        from .tiles import read_tile, tile_origins

        torch, cfg = self._torch, self.config
        with open_slide(image, mpp) as slide:
            origins = tile_origins(slide.width, slide.height, cfg)
            boxes, scores, classes = [], [], []
            bar = tqdm(total=len(origins), desc=Path(image).name, unit="tile", disable=not progress, leave=False)
            for start in range(0, len(origins), cfg.batch_size):
                batch_origins = origins[start : start + cfg.batch_size]
                tiles = np.stack([read_tile(slide, x, y, cfg) for x, y in batch_origins])
                batch = self.normalize(torch.from_numpy(tiles).to(self.device))
                with torch.inference_mode():
                    class_logits, box_deltas = self.model(batch)
                for (x, y), logits, deltas in zip(batch_origins, class_logits, box_deltas):
                    b, s, c = tile_boxes(logits, deltas, self.anchors, self.candidate_threshold, cfg)
                    boxes.append(b.numpy() + np.array([x, y, x, y]))
                    scores.append(s.numpy())
                    classes.append(c.numpy())
                bar.update(len(batch_origins))
            bar.close()
            spacing = slide.spacing_mm
            width, height = slide.width, slide.height
        boxes_a = np.concatenate(boxes) if boxes else np.zeros((0, 4), np.int64)
        scores_a = np.concatenate(scores) if scores else np.zeros(0, np.float32)
        classes_a = np.concatenate(classes) if classes else np.zeros(0, np.int64)
        # Padding beyond a small image's edge is not tissue: drop what was found there.
        cx, cy = (boxes_a[:, 0] + boxes_a[:, 2]) / 2, (boxes_a[:, 1] + boxes_a[:, 3]) / 2
        inside = (cx < width) & (cy < height)
        boxes_a, scores_a, classes_a = boxes_a[inside], scores_a[inside], classes_a[inside]
        keep = distance_nms(boxes_a, scores_a, cfg.distance_nms_px, self.candidate_threshold)
        return Detections(boxes_a[keep], scores_a[keep], classes_a[keep], spacing)

    def points_json(self, image: str | Path, style: str = "2021", mpp: float | None = None, progress: bool = False) -> dict[str, Any]:
        from .output import multiple_points

        return multiple_points(self.detect(image, mpp, progress), self.threshold, style)


def default_weights() -> Path:
    return PUBLISHED_WEIGHTS


def output_paths(images: list[Path], output: Path | None) -> list[Path]:
    """One image: `output` is the file. Several: `output` is a folder of `<stem>.json`."""
    if len(images) == 1 and output is not None and not output.is_dir():
        return [output]
    folder = output or Path(".")
    stems = [p.stem for p in images]
    if len(set(stems)) != len(stems):
        raise MidogError("several input images share a file name stem; their outputs would overwrite each other")
    return [folder / f"{stem}.json" for stem in stems]


def run_detect(
    images: list[Path],
    weights: Path,
    output: Path | None = None,
    threshold: float | None = None,
    mpp: float | None = None,
    device: str = "auto",
    style: str = "2021",
    progress: bool = True,
) -> int:
    """Detect on every image; a bad image is reported and skipped, never losing the others."""
    from tqdm import tqdm

    from .output import write_json_atomic

    if not weights.is_file():
        raise MidogError(f"{weights}: weights file not found (run `midog fetch` for the published weights)")
    targets = output_paths(images, output)
    detector = Detector(weights, device, threshold)
    failures = 0
    for image, target in tqdm(list(zip(images, targets)), desc="images", unit="image", disable=not progress or len(images) < 2):
        try:
            result = detector.points_json(image, style, mpp, progress)
        except MidogError as exc:
            failures += 1
            print(f"midog detect: error: {exc}", file=sys.stderr)
            continue
        write_json_atomic(target, result)
        n_mitotic = sum(1 for p in result["points"] if p.get("name", "mitotic figure") == "mitotic figure")
        tqdm.write(f"{image}: {n_mitotic} mitotic figures -> {target}", file=sys.stderr)
    if failures:
        print(f"midog detect: {failures} of {len(images)} images failed", file=sys.stderr)
    return 1 if failures else 0


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("detect", help="detect mitotic figures and write Multiple points JSON")
    p.add_argument("images", nargs="+", type=Path, metavar="IMAGE")
    p.add_argument("--weights", type=Path, default=None, help=f"weights file (default: {PUBLISHED_WEIGHTS})")
    p.add_argument("--output", "-o", type=Path, default=None, help="output file (one image) or folder (several); default: ./<image stem>.json")
    p.add_argument("--threshold", type=float, default=None, help="operating point (default: the checkpoint's, else 0.64)")
    p.add_argument("--mpp", type=float, default=None, help="micrometres per pixel, overriding or replacing the file's resolution")
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu or cuda[:N]")
    p.add_argument("--style", choices=["2021", "2022"], default="2021", help="2021: points above threshold; 2022: all candidates with probability and name")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    p.set_defaults(run=lambda a: run_detect(a.images, a.weights or default_weights(), a.output, a.threshold, a.mpp, a.device, a.style, a.progress))
