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


def read_tile(slide: "object", x: int, y: int, config: DetectorConfig = REFERENCE, size: int | None = None) -> np.ndarray:
    """(size, size, 3) uint8 tile at (x, y), `config.tile_size` unless `size` is given (a
    training patch); parts beyond a small image's edge are `pad_fill`."""
    size = config.tile_size if size is None else size
    w, h = min(size, slide.width - x), min(size, slide.height - y)
    region = slide.read_region(x, y, w, h)
    if (w, h) == (size, size):
        return region
    tile = np.empty((size, size, 3), np.uint8)
    tile[:] = pad_fill(config)
    tile[:h, :w] = region
    return tile


class Normalizer:
    """uint8 (B, H, W, 3) -> normalised float32 (B, 3, H, W), channels-last, on the device.

    The reference divides by 255 in float64 and casts to float32 before normalising; for
    every uint8 value that equals float32 division by 255 (tests/test_postprocess.py checks
    all 256), so three in-place float32 passes give the reference's values bit for bit.
    The result keeps the tiles' channels-last layout, which the network wants anyway.
    """

    def __init__(self, config: DetectorConfig = REFERENCE, device: torch.device | str = "cpu") -> None:
        self.mean = torch.tensor(config.mean, dtype=torch.float32, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(config.std, dtype=torch.float32, device=device).view(1, 3, 1, 1)

    def __call__(self, tiles_uint8: torch.Tensor) -> torch.Tensor:
        return self.standardize(self.to_unit(tiles_uint8))

    @staticmethod
    def to_unit(tiles_uint8: torch.Tensor) -> torch.Tensor:
        """uint8 (B, H, W, 3) -> float32 (B, 3, H, W) in [0, 1]; training augments here."""
        return tiles_uint8.permute(0, 3, 1, 2).float().div_(255.0)

    def standardize(self, x: torch.Tensor) -> torch.Tensor:
        """[0, 1] float32 (B, 3, H, W) -> the network's input, in place."""
        return x.sub_(self.mean.to(x.device)).div_(self.std.to(x.device))
