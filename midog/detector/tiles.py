"""The tile grid of the reference (docs/reference-algorithm.md#tiling) and the normalised tile batches."""

from __future__ import annotations

import numpy as np
import torch

from ..config import REFERENCE, DetectorConfig


def tile_origins(width: int, height: int, config: DetectorConfig = REFERENCE) -> list[tuple[int, int]]:
    """Top-left (x, y) of every tile, x outer and y inner as the reference visits them.

    A tile crossing the right or bottom edge moves back to end at the edge. The reference
    visits such tiles twice when two grid steps land on the same place; the repeat gives
    identical detections that its distance NMS then removes, so we visit each once.
    Images smaller than a tile get one origin at 0 on that axis (the tile is padded).
    """
    size, stride = config.tile_size, config.stride

    def axis(dim: int) -> list[int]:
        return [max(0, min(int(v), dim - size)) for v in np.arange(0, dim, stride)]

    origins = [(x, y) for x in axis(width) for y in axis(height)]
    return list(dict.fromkeys(origins))


def pad_fill(config: DetectorConfig = REFERENCE) -> np.ndarray:
    """The uint8 colour that pads tiles and training patches beyond an image's edge: the
    normalisation mean, i.e. zero input to the network, so padding looks like nothing."""
    return np.round(np.asarray(config.mean) * 255).astype(np.uint8)


def read_tile(
    slide: "object", x: int, y: int, config: DetectorConfig = REFERENCE, size: int | None = None, out: np.ndarray | None = None
) -> np.ndarray:
    """(size, size, 3) uint8 tile at (x, y), `config.tile_size` unless `size` is given (a
    training patch); parts beyond a small image's edge are `pad_fill`. Written into `out`
    (a batch's staging buffer) when given."""
    size = config.tile_size if size is None else size
    w, h = min(size, slide.width - x), min(size, slide.height - y)
    if (w, h) == (size, size):
        if out is None:
            return slide.read_region(x, y, w, h)
        if hasattr(slide, "read_into"):
            return slide.read_into(out, x, y)
        out[:] = slide.read_region(x, y, w, h)
        return out
    tile = np.empty((size, size, 3), np.uint8) if out is None else out
    tile[:] = pad_fill(config)
    tile[:h, :w] = slide.read_region(x, y, w, h)
    return tile


class Normalizer:
    """uint8 (B, H, W, 3) -> normalised float32 (B, 3, H, W), channels-last, on the device.

    The reference divides by 255 in float64 and casts to float32 before normalising; for
    every uint8 value that equals float32 division by 255 (tests/test_postprocess.py checks
    all 256), so three in-place float32 passes give the reference's values bit for bit.
    The result keeps the tiles' channels-last layout, which the network wants anyway.

    The per-channel passes run on each image row seen as one run of W x 3 values against a
    row of the constants repeated: the same divisions and subtractions, value for value, but
    along a contiguous row that the CPU vectorises. Broadcasting (1, 3, 1, 1) over the
    channels-last layout instead runs an inner loop 3 values long: measured 8x slower on the
    CPU, where it cost more than decoding the image.
    """

    def __init__(self, config: DetectorConfig = REFERENCE, device: torch.device | str = "cpu") -> None:
        self.mean = torch.tensor(config.mean, dtype=torch.float32, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(config.std, dtype=torch.float32, device=device).view(1, 3, 1, 1)
        self._rows: dict[tuple[int, torch.device], tuple[torch.Tensor, torch.Tensor]] = {}

    def __call__(self, tiles_uint8: torch.Tensor) -> torch.Tensor:
        b, h, w, c = tiles_uint8.shape
        if c != 3:
            return self.standardize(self.to_unit(tiles_uint8))
        x = tiles_uint8.contiguous().float()  # (B, H, W, 3), i.e. NCHW channels-last
        rows = x.view(b * h, w * c)
        mean, std = self._row_constants(w, x.device)
        rows.div_(255.0).sub_(mean).div_(std)
        return x.permute(0, 3, 1, 2)

    def into(self, tile: np.ndarray, out: np.ndarray) -> np.ndarray:
        """One uint8 (H, W, 3) tile normalised into float32 `out` (H, W, 3) with numpy, on the
        host: the same three correctly rounded float32 operations value for value, so the
        same bits as `__call__` (tests/test_host_feed.py checks). Reader threads normalise
        this way for the CPU device, in parallel with decoding and without torch's
        intra-op threads, whose hand-offs cost more than the arithmetic on small batches."""
        h, w, c = tile.shape
        rows, pixels = out.reshape(h, w * c), tile.reshape(h, w * c)
        mean, std = (t.numpy() for t in self._row_constants(w, torch.device("cpu")))
        # Whole-tile passes, not blocks of rows that would stay in the core's cache: each
        # numpy call hands the GIL back and forth with the other reader threads, and with
        # 52 calls a tile instead of 4 the pipeline ran 15-20% slower (measured, 2 readers).
        rows[...] = pixels
        np.divide(rows, np.float32(255.0), out=rows)
        np.subtract(rows, mean, out=rows)
        np.divide(rows, std, out=rows)
        return out

    def _row_constants(self, width: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        key = (width, device)
        if key not in self._rows:
            self._rows[key] = tuple(t.to(device).view(3).repeat(width).view(1, -1) for t in (self.mean, self.std))  # type: ignore[assignment]
        return self._rows[key]

    @staticmethod
    def to_unit(tiles_uint8: torch.Tensor) -> torch.Tensor:
        """uint8 (B, H, W, 3) -> float32 (B, 3, H, W) in [0, 1]; training augments here."""
        return tiles_uint8.permute(0, 3, 1, 2).float().div_(255.0)

    def standardize(self, x: torch.Tensor) -> torch.Tensor:
        """[0, 1] float32 (B, 3, H, W) -> the network's input, in place."""
        return x.sub_(self.mean.to(x.device)).div_(self.std.to(x.device))
