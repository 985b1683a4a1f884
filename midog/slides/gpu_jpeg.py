"""Decoding a JPEG-tiled TIFF's stored tiles on the GPU and cutting the network's tiles there.

Optional: with nvImageCodec (`pip install "midog[gpu]"`, in the container) or else
torchvision's `decode_jpeg` on CUDA, a batch's stored tiles are read as bytes, decoded in
one call on the device and assembled into the batch there, so the host only reads bytes.
Without a CUDA device, for another compression, or when the first tile's GPU decode does
not match the CPU's (a colour convention the GPU decoder reads differently), `GpuJpegTiles.open`
returns None and the detector reads on the CPU as before (`slides.chunks`).

JPEG decoders may differ by a level or two in a few pixels (IDCT rounding), so detections
from GPU-decoded tiles agree with the CPU's within the fast-mode tolerance, not to the bit:
exact mode never uses this path.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

if TYPE_CHECKING:
    import torch

JPEG = 7  # TIFF compression: new-style JPEG
# Mean absolute difference (grey levels) allowed between the GPU and CPU decodes of the first
# stored tile: IDCT rounding stays far below it, a wrong colour transform far above it.
MAX_MEAN_DIFFERENCE = 1.0
CACHED_TILES = 256  # decoded stored tiles kept on the device (512 px: 200 MB)

Decoder = Callable[[Sequence[bytes]], list["torch.Tensor"]]


def jpeg_stream(tables: bytes | None, data: bytes) -> bytes:
    """A TIFF JPEG tile (an abbreviated stream) made whole with the file's JPEGTables: the
    tables' markers between the tile's start-of-image marker and its frame."""
    if not tables:
        return data
    return tables[:-2] + data[2:]  # tables: SOI ... EOI; tile: SOI ... EOI


def nvimgcodec_decoder(device: "torch.device") -> Decoder | None:
    """nvImageCodec's batched decoder (the `gpu` extra), or None where it is not installed."""
    try:
        from nvidia import nvimgcodec  # type: ignore[import-not-found]
    except ImportError:
        return None
    import torch

    decoder = nvimgcodec.Decoder(device_id=device.index or 0)

    def decode(streams: Sequence[bytes]) -> list[torch.Tensor]:
        images = decoder.decode([nvimgcodec.CodeStream(s) for s in streams])
        # nvImageCodec images speak __cuda_array_interface__: (h, w, 3) uint8 on the device.
        return [torch.as_tensor(image, device=device).permute(2, 0, 1) for image in images]

    return decode


def torchvision_decoder(device: "torch.device") -> Decoder | None:
    """torchvision's `decode_jpeg` on `device` (nvJPEG on CUDA; libjpeg-turbo on the CPU,
    which the tests use to check the assembly)."""
    try:
        import torch
        from torchvision.io import ImageReadMode, decode_jpeg
    except ImportError:
        return None

    def decode(streams: Sequence[bytes]) -> list[torch.Tensor]:
        data = [torch.frombuffer(bytearray(s), dtype=torch.uint8) for s in streams]
        return list(decode_jpeg(data, mode=ImageReadMode.RGB, device=device))

    return decode


def pick_decoder(device: "torch.device") -> tuple[str, Decoder] | None:
    """The GPU JPEG decoder for `device`: nvImageCodec, else torchvision; None off CUDA."""
    if device.type != "cuda":
        return None
    for name, make in (("nvimgcodec", nvimgcodec_decoder), ("torchvision", torchvision_decoder)):
        try:
            decode = make(device)
        except Exception:  # a broken optional install must not stop detection
            decode = None
        if decode is not None:
            return name, decode
    return None


class GpuJpegTiles:
    """The network's tiles of a JPEG-tiled page, decoded and assembled on `device`."""

    def __init__(self, path: Path, page: Any, device: "torch.device", decode: Decoder, name: str = "") -> None:
        self.path, self.device, self._decode, self.name = path, device, decode, name
        self.width, self.height = int(page.imagewidth), int(page.imagelength)
        self.chunk = (int(page.tilelength), int(page.tilewidth))
        self._cols = -(-self.width // self.chunk[1])
        self._offsets = np.asarray(page.dataoffsets, np.int64)
        self._counts = np.asarray(page.databytecounts, np.int64)
        self._tables = page.jpegtables
        self._fd = os.open(path, os.O_RDONLY)
        self._cache: OrderedDict[int, torch.Tensor] = OrderedDict()

    @classmethod
    def open(cls, path: Path, page: Any, device: "torch.device", decoder: tuple[str, Decoder] | None = None,
             reference: Callable[[int, int, int, int], np.ndarray] | None = None) -> "GpuJpegTiles | None":
        """A reader when `page` is 8-bit RGB in JPEG tiles and a decoder exists for `device`
        (`decoder`, default `pick_decoder`); and, given `reference` (the CPU reader's
        read_region), when the first stored tile decodes alike on both. Else None."""
        if decoder is None:
            decoder = pick_decoder(device)
        if decoder is None or not page.is_tiled or page.compression != JPEG:
            return None
        if page.samplesperpixel != 3 or page.bitspersample != 8 or page.planarconfig != 1:
            return None
        reader = cls(path, page, device, decoder[1], decoder[0])
        if reference is not None:
            first = int(np.flatnonzero(reader._counts > 0)[0]) if (reader._counts > 0).any() else None
            if first is not None:
                y, x = (first // reader._cols) * reader.chunk[0], (first % reader._cols) * reader.chunk[1]
                h, w = min(reader.chunk[0], reader.height - y), min(reader.chunk[1], reader.width - x)
                try:
                    ours = reader._tiles([first])[first][:, :h, :w].permute(1, 2, 0).cpu().numpy().astype(np.int16)
                except Exception:  # the decoder cannot read this file's JPEG flavour
                    reader.close()
                    return None
                if np.abs(ours - reference(x, y, w, h).astype(np.int16)).mean() > MAX_MEAN_DIFFERENCE:
                    reader.close()
                    return None
        return reader

    def _tiles(self, indices: Sequence[int]) -> dict[int, "torch.Tensor"]:
        """(3, th, tw) uint8 decoded stored tiles on the device, missing ones decoded in one call."""
        import torch

        wanted = list(dict.fromkeys(indices))
        missing = [i for i in wanted if i not in self._cache and self._counts[i] > 0]
        if missing:
            streams = [jpeg_stream(self._tables, os.pread(self._fd, int(self._counts[i]), int(self._offsets[i]))) for i in missing]
            for i, image in zip(missing, self._decode(streams)):
                self._cache[i] = image
        out = {}
        for i in wanted:
            if self._counts[i] == 0:  # sparse: glass
                out[i] = torch.full((3, *self.chunk), 255, dtype=torch.uint8, device=self.device)
                continue
            self._cache.move_to_end(i)
            out[i] = self._cache[i]
        while len(self._cache) > CACHED_TILES:
            self._cache.popitem(last=False)
        return out

    def read_batch(self, origins: Sequence[tuple[int, int]], size: int, fill: np.ndarray) -> "torch.Tensor":
        """(B, size, size, 3) uint8 tiles at `origins` on the device; beyond the image `fill`."""
        import torch

        th, tw = self.chunk
        needed: list[int] = []
        for x, y in origins:
            for r in range(y // th, (min(y + size, self.height) - 1) // th + 1):
                needed += [r * self._cols + c for c in range(x // tw, (min(x + size, self.width) - 1) // tw + 1)]
        stored = self._tiles(needed)
        batch = torch.empty((len(origins), 3, size, size), dtype=torch.uint8, device=self.device)
        batch[:] = torch.as_tensor(fill, device=self.device).view(1, 3, 1, 1)
        for b, (x, y) in enumerate(origins):
            x1, y1 = min(x + size, self.width), min(y + size, self.height)
            for r in range(y // th, (y1 - 1) // th + 1):
                for c in range(x // tw, (x1 - 1) // tw + 1):
                    tile = stored[r * self._cols + c]
                    ty, tx = r * th, c * tw
                    ys, ye, xs, xe = max(y, ty), min(y1, ty + th), max(x, tx), min(x1, tx + tw)
                    batch[b, :, ys - y : ye - y, xs - x : xe - x] = tile[:, ys - ty : ye - ty, xs - tx : xe - tx]
        return batch.permute(0, 2, 3, 1)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        self._cache.clear()
