"""Feeding the network: batches of uint8 tiles read by threads into reused staging buffers
(`prefetch_batches`), or decoded and assembled on the GPU (`gpu_batches`)."""

from __future__ import annotations

import queue
import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from itertools import islice
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np

from ..config import DetectorConfig

if TYPE_CHECKING:
    import torch

    from ..slides.readers import Slide


def prefetch_batches(
    slide: "Slide", origins: list[tuple[int, int]], batch_size: int, config: DetectorConfig, workers: int, pin: bool,
    normalizer: Any = None,
) -> Iterator[tuple[list[tuple[int, int]], "torch.Tensor"]]:
    """Yield (origins, uint8 tiles) batches in order while worker threads decode the next ones.

    At most workers + 1 batches are in flight, so memory is flat whatever the slide size.
    Decoders (zlib, JPEG, openslide) release the GIL, so threads overlap with the model.
    Tiles are read straight into staging buffers allocated (and pinned, for a GPU) once and
    reused: a batch's buffer goes back to the pool when the consumer asks for the next batch,
    or, for a GPU, once the copy queued from it (`StagingPool.release`) has finished.
    With a `normalizer` (the CPU device), the readers also normalise each tile
    (`Normalizer.into`) and the batches are the network's float32 input, (B, H, W, 3).
    """
    import torch

    from .tiles import read_tile

    staging = StagingPool(batch_size, config.tile_size, workers + 3, pin, torch.float32 if normalizer is not None else torch.uint8)
    scratch = threading.local()  # each reader's uint8 tile, when it normalises

    def load(chunk: list[tuple[int, int]]) -> tuple[list[tuple[int, int]], torch.Tensor]:
        buffer = staging.take()
        array = buffer.numpy()
        size = config.tile_size
        if hasattr(slide, "prepare"):  # share the decoding of chunks with the other readers
            slide.prepare([(x, y, min(size, slide.width - x), min(size, slide.height - y)) for x, y in chunk])
        for i, (x, y) in enumerate(chunk):
            if normalizer is None:
                read_tile(slide, x, y, config, out=array[i])
                continue
            if not hasattr(scratch, "tile"):
                scratch.tile = np.empty((size, size, 3), np.uint8)
            normalizer.into(read_tile(slide, x, y, config, out=scratch.tile), array[i])
        return chunk, buffer[: len(chunk)]

    chunks = iter([origins[i : i + batch_size] for i in range(0, len(origins), batch_size)])
    if workers <= 0:
        for chunk in chunks:
            result = load(chunk)
            yield result
            staging.release(result[1])
        return
    with ThreadPoolExecutor(workers, thread_name_prefix="tiles") as pool:
        pending = deque(pool.submit(load, c) for c in islice(chunks, workers + 1))
        while pending:
            result = pending.popleft().result()
            nxt = next(chunks, None)
            if nxt is not None:
                pending.append(pool.submit(load, nxt))
            yield result
            staging.release(result[1])


class StagingPool:
    """Reused uint8 batch buffers, pinned once when they feed a GPU. A buffer handed back
    while an asynchronous copy from it may still run carries a CUDA event; it is refilled
    only after that event, so no copy ever reads a buffer being overwritten."""

    def __init__(self, batch_size: int, tile_size: int, count: int, pin: bool, dtype: Any = None) -> None:
        import torch

        self._torch = torch
        self._pin = pin
        self._free: queue.Queue = queue.Queue()
        for _ in range(count):
            buffer = torch.empty((batch_size, tile_size, tile_size, 3), dtype=dtype or torch.uint8)
            self._free.put((buffer.pin_memory() if pin else buffer, None))

    def take(self) -> "torch.Tensor":
        buffer, event = self._free.get()
        if event is not None:
            event.synchronize()
        return buffer

    def release(self, tiles: "torch.Tensor") -> None:
        """Hand back the buffer `tiles` views, after the work queued on it so far."""
        base = tiles._base if tiles._base is not None else tiles
        event = None
        if self._pin:
            event = self._torch.cuda.Event()
            event.record()
        self._free.put((base, event))


def gpu_batches(
    reader: Any, origins: list[tuple[int, int]], batch_size: int, config: DetectorConfig
) -> Iterator[tuple[list[tuple[int, int]], "torch.Tensor"]]:
    """Batches from a `slides.gpu_jpeg.GpuJpegTiles`: one thread reads the next batches' bytes
    and queues their decoding on the device while the network runs this one."""
    from .tiles import pad_fill

    fill = pad_fill(config)
    chunks = [origins[i : i + batch_size] for i in range(0, len(origins), batch_size)]
    try:
        with ThreadPoolExecutor(1, thread_name_prefix="gpu-jpeg") as pool:
            pending = deque(pool.submit(reader.read_batch, c, config.tile_size, fill) for c in chunks[:2])
            for i, chunk in enumerate(chunks):
                tiles = pending.popleft().result()
                if i + 2 < len(chunks):
                    pending.append(pool.submit(reader.read_batch, chunks[i + 2], config.tile_size, fill))
                yield chunk, tiles
    finally:
        reader.close()


class CudaStreams:
    """Three CUDA streams so that, batch after batch, the copy of the next batch to the GPU,
    the network on this one and the post-processing of the last one run at the same time:
    copies on their own stream, the network on the default stream, which waits for its
    batch's copy, and post-processing on a third, which waits for its batch's network.
    On one stream each would wait for the one before. None off CUDA (`for_device`)."""

    def __init__(self, device: "torch.device") -> None:
        import torch

        self._torch = torch
        self.copy = torch.cuda.Stream(device)
        self.post = torch.cuda.Stream(device)

    @classmethod
    def for_device(cls, device: "torch.device") -> "CudaStreams | None":
        return cls(device) if device.type == "cuda" else None

    def to_device(self, tiles: "torch.Tensor") -> "torch.Tensor":
        """The batch on the GPU, copied on the copy stream from its pinned staging buffer; the
        current (network) stream waits for the copy. Tiles decoded on the GPU are already there."""
        torch = self._torch
        compute = torch.cuda.current_stream()
        if tiles.is_cuda:
            return tiles
        with torch.cuda.stream(self.copy):
            on_device = tiles.to(compute.device, non_blocking=True)
        compute.wait_stream(self.copy)
        # Allocated on the copy stream, used on the network's: without this the allocator could
        # hand its memory to the next copy while the network still reads it.
        on_device.record_stream(compute)
        return on_device

    def forward_done(self) -> "CudaStreams.Ready":
        """A mark after the network's work queued so far, for the post-processing thread."""
        event = self._torch.cuda.Event()
        event.record()
        return CudaStreams.Ready(self, event)

    class Ready:
        def __init__(self, streams: "CudaStreams", event: Any) -> None:
            self.streams, self.event = streams, event

        def on_post_stream(self, *outputs: "torch.Tensor") -> Any:
            """Context: post-processing kernels go to the post stream, after the network's."""
            post = self.streams.post
            post.wait_event(self.event)
            for tensor in outputs:  # made on the network's stream, read on this one
                tensor.record_stream(post)
            return self.streams._torch.cuda.stream(post)
