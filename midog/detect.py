"""The detection pipeline: image -> tiles -> network -> boxes -> points (`midog detect`)."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np

from .config import REFERENCE, DetectorConfig
from .detections import Detections
from .device import auto_batch_size, bf16_supported, pick_device  # noqa: F401  (training imports pick_device from here)
from .errors import MidogError
from .fetch import published_weights

if TYPE_CHECKING:
    import torch

    from .slide import Slide


def prefetch_batches(
    slide: "Slide", origins: list[tuple[int, int]], batch_size: int, config: DetectorConfig, workers: int, pin: bool
) -> Iterator[tuple[list[tuple[int, int]], "torch.Tensor"]]:
    """Yield (origins, uint8 tiles) batches in order while worker threads decode the next ones.

    At most workers + 1 batches are in flight, so memory is flat whatever the slide size.
    Decoders (zlib, JPEG, openslide) release the GIL, so threads overlap with the model.
    """
    import torch

    from .tiles import read_tile

    def load(chunk: list[tuple[int, int]]) -> tuple[list[tuple[int, int]], torch.Tensor]:
        tiles = torch.from_numpy(np.stack([read_tile(slide, x, y, config) for x, y in chunk]))
        return chunk, tiles.pin_memory() if pin else tiles

    chunks = iter([origins[i : i + batch_size] for i in range(0, len(origins), batch_size)])
    if workers <= 0:
        yield from map(load, chunks)
        return
    with ThreadPoolExecutor(workers, thread_name_prefix="tiles") as pool:
        pending = deque(pool.submit(load, c) for c in islice(chunks, workers + 1))
        while pending:
            result = pending.popleft().result()
            nxt = next(chunks, None)
            if nxt is not None:
                pending.append(pool.submit(load, nxt))
            yield result


class Detector:
    """A loaded network plus the reference's tiling and post-processing.

    `threshold` defaults to the checkpoint's own operating point (its metadata) and else
    to the reference's 0.64. Exact mode (default) runs the reference network in float32
    and reproduces its outputs (scores within ~1e-5); `compile` runs it through
    torch.compile, still in float32; `fast` adds bfloat16 autocast (float16 on GPUs
    without bfloat16).
    """

    def __init__(
        self,
        weights: str | Path,
        device: str = "auto",
        threshold: float | None = None,
        config: DetectorConfig = REFERENCE,
        fast: bool = False,
        batch_size: int | None = None,
        workers: int | None = None,
        compile: bool = False,
    ) -> None:
        import torch

        from .anchors import make_anchors
        from .network import fold_batchnorm, load_model
        from .tiles import Normalizer

        self.config = config
        self.device = pick_device(device)
        self.model, self.meta = load_model(weights, self.device, config)
        if self.device.type == "cuda":
            # Exact mode means true float32: no TF32 tensor-core shortcuts.
            torch.backends.cudnn.allow_tf32 = fast
            torch.backends.cuda.matmul.allow_tf32 = fast
            # Every batch has the same shape, so cuDNN's autotuner pays for itself at once.
            torch.backends.cudnn.benchmark = True
        self.threshold = float(threshold if threshold is not None else self.meta.get("threshold", config.threshold))
        self.anchors = make_anchors(config).to(self.device)
        self.normalize = Normalizer(config, self.device)
        self.fast = fast
        self.autocast_dtype = None
        # Channels-last with BatchNorm folded into the convs: what oneDNN's fastest CPU kernels
        # and tensor cores want (1.2-1.6x over NCHW here in float32, measured end to end).
        # Outputs stay within float32 rounding; the parity tests name every effect of it.
        self.model = fold_batchnorm(self.model).to(memory_format=torch.channels_last)
        if fast:
            if bf16_supported(self.device):
                self.autocast_dtype = torch.bfloat16
            elif self.device.type == "cuda":
                self.autocast_dtype = torch.float16
        self.batch_size = batch_size or auto_batch_size(self.device, fast, config)
        # Decoding threads: 2 keep the CPU's own model busy; a GPU needs every core decoding.
        cores = os.cpu_count() or 2
        self.workers = workers if workers is not None else (min(8, cores) if self.device.type == "cuda" else 2)
        self.post_workers = 2
        self._torch = torch
        self.compiled = False
        if compile:
            self.compiled = self._compile()

    def _compile(self) -> bool:
        """torch.compile with frozen weights (BatchNorm folded, fused kernels): ~1.6x on the
        CPU in float32, outputs within ~2e-5 of eager. Compiled here, on one dummy batch of the
        fixed batch size, so the cost counts as start-up and no later batch recompiles."""
        import warnings

        import torch._inductor.config

        torch = self._torch
        eager = self.eager = self.model
        torch._inductor.config.freezing = True
        try:
            self.model = torch.compile(eager, dynamic=False)
            size = self.config.tile_size
            self._forward(torch.zeros(self.batch_size, size, size, 3, dtype=torch.uint8, device=self.device))
        except Exception as exc:  # no C++ compiler in a runtime image, unsupported device, ...
            warnings.warn(f"torch.compile unavailable ({type(exc).__name__}: {str(exc)[:200]}); running eagerly")
            self.model = eager
            return False
        return True

    @property
    def candidate_threshold(self) -> float:
        # Candidates for the 2022 output; below the operating point, never above it. Greedy NMS
        # keeps a box only for higher-scoring ones, so the points above the threshold are the
        # same whichever of the two thresholds the NMS runs on.
        return min(self.config.candidate_threshold, self.threshold)

    def _forward(self, tiles: "torch.Tensor") -> tuple["torch.Tensor", "torch.Tensor"]:
        """uint8 (B, H, W, 3) tiles on the device -> class logits and box deltas, float32."""
        torch = self._torch
        # The compiled graph has one fixed batch size; a short last batch runs eagerly rather
        # than padded (padding 2 tiles to 10 costs 8 tiles' compute).
        model = self.model if not self.compiled or len(tiles) == self.batch_size else self.eager
        # Normalised inside inference mode, as at compile time: tensors made outside it carry
        # another dispatch key, which makes torch.compile recompile (6 s) on the first batch.
        with torch.inference_mode():
            batch = self.normalize(tiles)
            if self.autocast_dtype is None:
                return model(batch)
            with torch.autocast(self.device.type, dtype=self.autocast_dtype):
                logits, deltas = model(batch)
            return logits.float(), deltas.float()

    def tiles_to_run(self, slide: "Slide", tissue_only: bool | None) -> tuple[list[tuple[int, int]], int]:
        """Tile origins, minus background tiles when tissue detection is on; and the skip count."""
        from .tiles import tile_origins
        from .tissue import tiles_with_tissue, tissue_mask

        origins = tile_origins(slide.width, slide.height, self.config)
        if tissue_only is None:
            tissue_only = slide.is_whole_slide
        if not tissue_only:
            return origins, 0
        thumb, downsample = slide.thumbnail()
        kept = tiles_with_tissue(origins, self.config.tile_size, tissue_mask(thumb), downsample)
        return kept, len(origins) - len(kept)

    def detect(
        self,
        image: str | Path,
        mpp: float | None = None,
        progress: bool = False,
        tissue_only: bool | None = None,
        min_score: float | None = None,
    ) -> Detections:
        """Every candidate above `min_score` (default `candidate_threshold`) after both NMS
        stages, best first.

        Greedy NMS lets a box suppress only lower-scoring ones, so the points above any
        score s are the same whatever `min_score` <= s the NMS ran with: the 2021 output
        asks for the operating point and post-processes several times fewer boxes.
        `tissue_only` skips background tiles (default: on for whole-slide images only).
        """
        from tqdm import tqdm

        from .postprocess import distance_nms
        from .slide import open_slide

        torch, cfg = self._torch, self.config
        min_score = self.candidate_threshold if min_score is None else min_score
        started = time.perf_counter()
        with open_slide(image, mpp, readers=max(1, self.workers)) as slide:
            origins, skipped = self.tiles_to_run(slide, tissue_only)
            # Run row by row (what strip-organised files decode cheaply), then put the results
            # back in the reference's column-first order, which fixes how exact score ties break.
            rank = {xy: i for i, xy in enumerate(origins)}
            per_tile: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = [None] * len(origins)  # type: ignore[list-item]
            pin = self.device.type == "cuda"
            bar = tqdm(total=len(origins), desc=Path(image).name, unit="tile", disable=not progress, leave=False)
            row_major = sorted(origins, key=lambda xy: (xy[1], xy[0]))

            def collect(job: "Future[list]") -> None:
                results = job.result()
                for xy, result in results:
                    per_tile[rank[xy]] = result
                bar.update(len(results))

            # Per-tile NMS runs in threads while the network computes the next batch: on the
            # CPU it is single-threaded C++ that releases the GIL, on a GPU it waits for the
            # batch to finish there. A bounded number of batches is in flight.
            with ThreadPoolExecutor(self.post_workers, thread_name_prefix="nms") as post:
                jobs: deque[Future[list]] = deque()
                for batch_origins, tiles in prefetch_batches(slide, row_major, self.batch_size, cfg, self.workers, pin):
                    class_logits, box_deltas = self._forward(tiles.to(self.device, non_blocking=pin))
                    jobs.append(post.submit(self._tile_results, batch_origins, class_logits, box_deltas, min_score))
                    while len(jobs) > self.post_workers:
                        collect(jobs.popleft())
                while jobs:
                    collect(jobs.popleft())
            bar.close()
            boxes, scores, classes = (list(part) for part in zip(*per_tile)) if per_tile else ([], [], [])
            spacing = slide.spacing_mm
            width, height = slide.width, slide.height
        boxes_a = np.concatenate(boxes) if boxes else np.zeros((0, 4), np.int64)
        scores_a = np.concatenate(scores) if scores else np.zeros(0, np.float32)
        classes_a = np.concatenate(classes) if classes else np.zeros(0, np.int64)
        # Padding beyond a small image's edge is not tissue: drop what was found there.
        cx, cy = (boxes_a[:, 0] + boxes_a[:, 2]) / 2, (boxes_a[:, 1] + boxes_a[:, 3]) / 2
        inside = (cx < width) & (cy < height)
        boxes_a, scores_a, classes_a = boxes_a[inside], scores_a[inside], classes_a[inside]
        keep = distance_nms(boxes_a, scores_a, cfg.distance_nms_px, min_score)
        info = {"tiles": len(origins), "tiles_skipped": skipped, "seconds": time.perf_counter() - started}
        return Detections(boxes_a[keep], scores_a[keep], classes_a[keep], spacing, info)

    def _tile_results(
        self, origins: list[tuple[int, int]], class_logits: "torch.Tensor", box_deltas: "torch.Tensor", min_score: float
    ) -> list[tuple[tuple[int, int], tuple[np.ndarray, np.ndarray, np.ndarray]]]:
        from .postprocess import tile_boxes

        results = []
        for (x, y), logits, deltas in zip(origins, class_logits, box_deltas):
            b, s, c = tile_boxes(logits, deltas, self.anchors, min_score, self.config)
            results.append(((x, y), (b.numpy() + np.array([x, y, x, y]), s.numpy(), c.numpy())))
        return results

    def points_json(
        self, image: str | Path, style: str = "2021", mpp: float | None = None, progress: bool = False, tissue_only: bool | None = None
    ) -> dict[str, Any]:
        from .output import multiple_points

        return multiple_points(self.detect(image, mpp, progress, tissue_only, self.min_score_for(style)), self.threshold, style)

    def min_score_for(self, style: str) -> float:
        """Candidates an output style needs: the 2021 file lists only points above the
        operating point, so less need be post-processed; the 2022 file lists candidates."""
        return self.threshold if style == "2021" else self.candidate_threshold


def default_weights() -> Path:
    return published_weights()


def output_paths(images: list[Path], output: Path | None) -> list[Path]:
    """One image: `output` is the file. Several: `output` is a folder of `<stem>.json`."""
    if len(images) == 1 and output is not None and not output.is_dir():
        return [output]
    folder = output or Path(".")
    stems = [p.stem for p in images]
    if len(set(stems)) != len(stems):
        raise MidogError("several input images share a file name stem; their outputs would overwrite each other")
    return [folder / f"{stem}.json" for stem in stems]


def detect_to_file(
    detector: Detector,
    image: Path,
    target: Path,
    style: str = "2021",
    mpp: float | None = None,
    progress: bool = False,
    tissue_only: bool | None = None,
) -> str:
    """One image through the detector into its JSON file (written atomically); returns the
    one-line summary. `midog detect` and every batch runner write outputs through this, so
    the same image gives the same bytes whichever command ran it."""
    from .output import multiple_points, write_json_atomic

    detections = detector.detect(image, mpp, progress, tissue_only, detector.min_score_for(style))
    write_json_atomic(target, multiple_points(detections, detector.threshold, style))
    info = detections.info
    skipped = f", {info['tiles_skipped']} background tiles skipped" if info["tiles_skipped"] else ""
    n_mitotic = int((detections.scores > detector.threshold).sum())
    return f"{image}: {n_mitotic} mitotic figures ({info['tiles']} tiles{skipped}, {info['seconds']:.1f} s) -> {target}"


def run_detect(
    images: list[Path],
    weights: Path,
    output: Path | None = None,
    threshold: float | None = None,
    mpp: float | None = None,
    device: str = "auto",
    style: str = "2021",
    progress: bool = True,
    fast: bool = False,
    batch_size: int | None = None,
    tissue_only: bool | None = None,
    compile: bool = False,
) -> int:
    """Detect on every image; a bad image is reported and skipped, never losing the others."""
    from tqdm import tqdm

    if not weights.is_file():
        raise MidogError(f"{weights}: weights file not found (run `midog fetch` for the published weights)")
    targets = output_paths(images, output)
    detector = Detector(weights, device, threshold, fast=fast, batch_size=batch_size, compile=compile)
    failures = 0
    for image, target in tqdm(list(zip(images, targets)), desc="images", unit="image", disable=not progress or len(images) < 2):
        try:
            summary = detect_to_file(detector, image, target, style, mpp, progress, tissue_only)
        except MidogError as exc:
            failures += 1
            print(f"midog detect: error: {exc}", file=sys.stderr)
            continue
        tqdm.write(summary, file=sys.stderr)
    if failures:
        print(f"midog detect: {failures} of {len(images)} images failed", file=sys.stderr)
    return 1 if failures else 0


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("detect", help="detect mitotic figures and write Multiple points JSON")
    p.add_argument("images", nargs="+", type=Path, metavar="IMAGE")
    p.add_argument("--weights", type=Path, default=None, help="weights file (default: the published weights fetched by `midog fetch`)")
    p.add_argument("--output", "-o", type=Path, default=None, help="output file (one image) or folder (several); default: ./<image stem>.json")
    p.add_argument("--threshold", type=float, default=None, help="operating point (default: the checkpoint's, else 0.64)")
    p.add_argument("--mpp", type=float, default=None, help="micrometres per pixel, overriding or replacing the file's resolution")
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu or cuda[:N]")
    p.add_argument("--style", choices=["2021", "2022"], default="2021", help="2021: points above threshold; 2022: all candidates with probability and name")
    p.add_argument("--fast", action="store_true", help="channels-last + bfloat16/float16 autocast: faster, scores differ slightly from the reference")
    p.add_argument("--compile", action="store_true", help="torch.compile the network: faster on large images after ~10 s of start-up; needs a C++ compiler")
    p.add_argument("--batch-size", type=int, default=None, help="tiles per batch (default on CPU: 4, or 10 with --fast; on GPU: by free memory)")
    tissue = p.add_mutually_exclusive_group()
    tissue.add_argument("--tissue-only", dest="tissue_only", action="store_true", default=None, help="skip background tiles (default for whole-slide images)")
    tissue.add_argument("--all-tiles", dest="tissue_only", action="store_false", help="run every tile (default for region TIFFs)")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    p.set_defaults(
        run=lambda a: run_detect(
            a.images, a.weights or default_weights(), a.output, a.threshold, a.mpp, a.device, a.style, a.progress, a.fast, a.batch_size, a.tissue_only, a.compile
        )
    )
