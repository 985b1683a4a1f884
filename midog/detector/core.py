"""The inference core: a loaded network plus the reference's tiling, normalisation and both
NMS stages, image -> Detections. `midog detect`, process.py, the batch command, training
validation and the Python API all detect through `Detector`."""

from __future__ import annotations

import os
import time
from collections import deque
from contextlib import contextmanager
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np

from ..config import REFERENCE, DetectorConfig
from .detections import Detections, Thumbnail
from .device import auto_batch_size, bf16_supported, pick_device
from .feed import CudaStreams, gpu_batches, prefetch_batches
from ..errors import TimeBudgetError
from ..slides.limits import DEFAULT_LIMITS, Limits

if TYPE_CHECKING:
    import torch

    from ..slides.slide import Slide


class Detector:
    """A loaded network plus the reference's tiling and post-processing: image -> `Detections`.

    Built from a network in memory (`Detector(model, ...)`, on the model's own device) or
    from a weights file (`Detector.from_weights(path, device, ...)`). `threshold` defaults
    to the checkpoint's own operating point (`meta["threshold"]`) and else to the
    reference's 0.64; `limits` bound what an image may cost before it is refused. Exact
    mode (default) runs the reference network in float32 and reproduces its outputs (scores
    within ~1e-5); `compile` runs it through torch.compile, still in float32; `fast` adds
    bfloat16 autocast (float16 on GPUs without bfloat16). The model is left as it is: the
    Detector folds BatchNorm into a copy in eval mode, so a model in training outputs what
    `midog detect` would output for its weights saved and loaded again.
    """

    def __init__(
        self,
        model: "torch.nn.Module",
        *,
        meta: dict[str, Any] | None = None,
        threshold: float | None = None,
        config: DetectorConfig = REFERENCE,
        fast: bool = False,
        batch_size: int | None = None,
        workers: int | None = None,
        compile: bool = False,
        limits: Limits = DEFAULT_LIMITS,
        source: str = "model",
    ) -> None:
        import torch

        from ..config import with_normalisation
        from ..config.checks import check_probability, checked
        from ..network.anchors import make_anchors
        from ..network.retinanet import fold_batchnorm
        from .tiles import Normalizer

        meta = meta or {}
        # A checkpoint trained without standardisation records it; everything else keeps `config`.
        self.config = config = with_normalisation(config, meta)
        self.device = next(model.parameters()).device
        self.meta = meta
        self.source = source  # the weights file, or "model": results record which weights made them
        stored = meta.get("threshold", config.threshold)
        # A checkpoint's operating point is data from a file: checked like the option itself.
        self.threshold = checked(check_probability, stored, f"{source}: stored threshold") if threshold is None else float(threshold)
        self.limits = limits  # what an image may cost before it is refused
        self.anchors = make_anchors(config).to(self.device)
        self.normalize = Normalizer(config, self.device)
        self.fast = fast
        self.autocast_dtype = None
        # Channels-last with BatchNorm folded into the convs: what oneDNN's fastest CPU kernels
        # and tensor cores want (1.2-1.6x over NCHW here in float32, measured end to end).
        # Outputs stay within float32 rounding; the parity tests name every effect of it.
        # fold_batchnorm works on a copy in eval mode: a training model is never changed.
        self.model = fold_batchnorm(model).to(memory_format=torch.channels_last)
        if fast:
            if bf16_supported(self.device):
                self.autocast_dtype = torch.bfloat16
            elif self.device.type == "cuda":
                self.autocast_dtype = torch.float16
        self.batch_size = batch_size or auto_batch_size(self.device, fast, config)
        # Decoding threads: 2 keep the CPU's own model busy; a GPU needs every core decoding.
        cores = usable_cores()
        self.workers = workers if workers is not None else (min(8, cores) if self.device.type == "cuda" else 2)
        self.post_workers = 2
        self._torch = torch
        self.compiled = False
        # Fast mode on CUDA decodes JPEG-tiled slides on the GPU when a decoder is installed.
        self.gpu_decode = True
        if compile:
            self.compiled = self._compile()

    @classmethod
    def from_weights(cls, weights: str | Path, device: str = "auto", **options: Any) -> "Detector":
        """A Detector for a weights file on `device` (auto: CUDA when usable, else the CPU);
        `options` are __init__'s (threshold, config, fast, batch_size, workers, compile, limits)."""
        from ..network.retinanet import load_model

        model, meta = load_model(weights, pick_device(device), options.get("config", REFERENCE))
        return cls(model, meta=meta, source=str(weights), **options)

    @contextmanager
    def _precision(self) -> Iterator[None]:
        """The GPU's float32 settings for this detector's forward only, then put back as they
        were: a training run (or another detector) in the same process keeps its own."""
        if self.device.type != "cuda":
            yield
            return
        backends = self._torch.backends
        saved = (backends.cudnn.allow_tf32, backends.cuda.matmul.allow_tf32, backends.cudnn.benchmark)
        # Exact mode means true float32: no TF32 tensor-core shortcuts. Every batch has the same
        # shape, so cuDNN's autotuner pays for itself at once.
        backends.cudnn.allow_tf32 = backends.cuda.matmul.allow_tf32 = self.fast
        backends.cudnn.benchmark = True
        try:
            yield
        finally:
            backends.cudnn.allow_tf32, backends.cuda.matmul.allow_tf32, backends.cudnn.benchmark = saved

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
        """uint8 (B, H, W, 3) tiles on the device, or float32 ones already normalised ->
        class logits and box deltas, float32."""
        torch = self._torch
        # The compiled graph has one fixed batch size; a short last batch runs eagerly rather
        # than padded (padding 2 tiles to 10 costs 8 tiles' compute).
        model = self.model if not self.compiled or len(tiles) == self.batch_size else self.eager
        # Normalised inside inference mode, as at compile time: tensors made outside it carry
        # another dispatch key, which makes torch.compile recompile (6 s) on the first batch.
        with self._precision(), torch.inference_mode():
            # float32 tiles were normalised by the readers (`_host_normalizer`).
            batch = tiles.permute(0, 3, 1, 2) if tiles.dtype == torch.float32 else self.normalize(tiles)
            if self.autocast_dtype is None:
                return model(batch)
            with torch.autocast(self.device.type, dtype=self.autocast_dtype):
                logits, deltas = model(batch)
            return logits.float(), deltas.float()

    def tiles_to_run(self, slide: "Slide", tissue_only: bool | None) -> tuple[list[tuple[int, int]], int]:
        """Tile origins, minus background tiles when tissue detection is on; and the skip count."""
        from .tiles import tile_origins
        from ..slides.tissue import tiles_with_data, tiles_with_tissue, tissue_mask

        origins = tile_origins(slide.width, slide.height, self.config)
        stored = tiles_with_data(slide, origins, self.config.tile_size)  # sparse TIFF tiles are background
        blank, origins = len(origins) - len(stored), stored
        if tissue_only is None:
            tissue_only = slide.is_whole_slide
        if not tissue_only:
            return origins, blank
        thumb, downsample = slide.thumbnail()
        kept = tiles_with_tissue(origins, self.config.tile_size, tissue_mask(thumb), downsample)
        return kept, len(origins) - len(kept) + blank

    def detect(
        self,
        image: str | Path,
        *,
        mpp: float | None = None,
        progress: bool = False,
        tissue_only: bool | None = None,
        min_score: float | None = None,
        deadline: float | None = None,
        thumbnail_side: int | None = None,
    ) -> Detections:
        """Every candidate above `min_score` (default `candidate_threshold`) after both NMS
        stages, best first. `mpp` overrides the file's spacing (open_slide's rule).

        Greedy NMS lets a box suppress only lower-scoring ones, so the points above any
        score s are the same whatever `min_score` <= s the NMS ran with: an output that lists
        only the mitotic figures asks for the operating point and post-processes several
        times fewer boxes.
        `tissue_only` skips background tiles (default: on for whole-slide images only).
        `deadline` (time.monotonic()) stops the image between batches with TimeBudgetError.
        `thumbnail_side`: also keep a thumbnail of at most that many pixels a side in the
        result, read while the image is open (for counts and overlays).
        """
        from tqdm import tqdm

        from ..network.postprocess import distance_nms
        from ..slides.readers import open_slide

        torch, cfg = self._torch, self.config
        min_score = self.candidate_threshold if min_score is None else min_score
        started = time.perf_counter()
        with open_slide(image, mpp, readers=max(1, self.workers), limits=self.limits) as slide:
            origins, skipped = self.tiles_to_run(slide, tissue_only)
            check_deadline(deadline, image, 0, len(origins))
            # Run row by row (neighbouring tiles share stored strips and tiles, decoded once
            # while cached), then put the results back in the reference's column-first order,
            # which fixes how exact score ties break.
            rank = {xy: i for i, xy in enumerate(origins)}
            parts: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
            pin = self.device.type == "cuda"
            bar = tqdm(total=len(origins), desc=Path(image).name, unit="tile", disable=not progress, leave=False)
            row_major = sorted(origins, key=lambda xy: (xy[1], xy[0]))

            def collect(job: "Future[tuple]") -> None:
                part, done = job.result()
                parts.append(part)
                bar.update(done)

            # Post-processing of a batch runs in a thread while the network computes the
            # next one: on the CPU it is C++ that releases the GIL, on a GPU it waits for the
            # batch to finish there. A bounded number of batches is in flight.
            streams = CudaStreams.for_device(self.device)
            with ThreadPoolExecutor(self.post_workers, thread_name_prefix="nms") as post:
                jobs: deque[Future[tuple]] = deque()
                batches = self._gpu_batches(slide, row_major) or prefetch_batches(slide, row_major, self.batch_size, cfg, self.workers, pin, self._host_normalizer())
                for batch_origins, tiles in batches:
                    check_deadline(deadline, image, bar.n, len(origins))
                    class_logits, box_deltas = self._forward(streams.to_device(tiles) if streams else tiles.to(self.device))
                    ranks = np.array([rank[xy] for xy in batch_origins], np.int64)
                    ready = streams.forward_done() if streams else None
                    jobs.append(post.submit(self._batch_results, np.asarray(batch_origins, np.int64), ranks, class_logits, box_deltas, min_score, ready))
                    while len(jobs) > self.post_workers:
                        collect(jobs.popleft())
                while jobs:
                    collect(jobs.popleft())
            bar.close()
            spacing = slide.spacing_mm
            width, height = slide.width, slide.height
            offset = slide.offset_px
            thumbnail = Thumbnail(*slide.thumbnail(thumbnail_side)) if thumbnail_side else None
        if parts:
            ranks_a, boxes_a, scores_a, classes_a = (np.concatenate(column) for column in zip(*parts))
        else:
            ranks_a, boxes_a, scores_a, classes_a = np.zeros(0, np.int64), np.zeros((0, 4), np.int64), np.zeros(0, np.float32), np.zeros(0, np.int64)
        # The reference's order: tiles column first, each tile's boxes best first (stable).
        order = np.argsort(ranks_a, kind="stable")
        boxes_a, scores_a, classes_a = boxes_a[order], scores_a[order], classes_a[order]
        # Padding beyond a small image's edge is not tissue: drop what was found there.
        cx, cy = (boxes_a[:, 0] + boxes_a[:, 2]) / 2, (boxes_a[:, 1] + boxes_a[:, 3]) / 2
        inside = (cx < width) & (cy < height)
        boxes_a, scores_a, classes_a = boxes_a[inside], scores_a[inside], classes_a[inside]
        keep = distance_nms(boxes_a, scores_a, cfg.distance_nms_px, min_score)
        info = {"tiles": len(origins), "tiles_skipped": skipped, "seconds": time.perf_counter() - started}
        return Detections(
            boxes_a[keep], scores_a[keep], classes_a[keep], spacing, info, self.threshold,
            image_size=(width, height), offset_px=offset, thumbnail=thumbnail, image=Path(image),
        )

    def _host_normalizer(self) -> Any:
        """On the CPU device the readers normalise the tiles they read, in parallel with
        decoding; a GPU normalises its own, and a compiled network is given the tiles as
        at compile time (a tensor made outside inference mode would make it recompile)."""
        return self.normalize if self.device.type == "cpu" and not self.compiled else None

    def _gpu_batches(self, slide: "Slide", origins: list[tuple[int, int]]) -> Iterator[tuple[list[tuple[int, int]], "torch.Tensor"]] | None:
        """Batches decoded and assembled on the GPU (slides.gpu_jpeg), for JPEG-tiled TIFFs in
        fast mode on CUDA with a GPU JPEG decoder; None otherwise, and the CPU reads. Exact
        mode never decodes on the GPU: JPEG decoders may round the IDCT differently."""
        if not (self.fast and self.gpu_decode and self.device.type == "cuda" and hasattr(slide, "gpu_jpeg_tiles")):
            return None
        reader = slide.gpu_jpeg_tiles(self.device)
        if reader is None:
            return None
        return gpu_batches(reader, origins, self.batch_size, self.config)

    def _batch_results(
        self, origins: np.ndarray, ranks: np.ndarray, class_logits: "torch.Tensor", box_deltas: "torch.Tensor", min_score: float,
        ready: "CudaStreams.Ready | None" = None,
    ) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray], int]:
        """A batch's kept boxes in image pixels, with each box's tile rank; and the tile count.
        On CUDA (`ready`) it runs on the post-processing stream once the batch's forward is done."""
        from ..network.postprocess import batch_tile_boxes

        if ready is None:
            kept = batch_tile_boxes(class_logits, box_deltas, self.anchors, min_score, self.config)
        else:
            with ready.on_post_stream(class_logits, box_deltas):
                kept = batch_tile_boxes(class_logits, box_deltas, self.anchors, min_score, self.config)
        xy = origins[kept.tile]
        boxes = kept.boxes + np.concatenate([xy, xy], 1)
        return (ranks[kept.tile], boxes, kept.scores, kept.classes), len(origins)


def usable_cores() -> int:
    """The cores this process may run on: its CPU affinity (a container's --cpuset-cpus, a
    taskset), not the machine's count, which would start threads for cores it cannot use."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 2


def check_deadline(deadline: float | None, image: str | Path, done: int, total: int) -> None:
    """Checked between batches: a batch is the unit of work that cannot be interrupted, so
    an image stops within one batch's time of its budget and the next image still runs."""
    if deadline is not None and time.monotonic() > deadline:
        raise TimeBudgetError(image, f"stopped after {done} of {total} tiles: over its time budget")
