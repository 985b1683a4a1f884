"""The tile grid: 512 px tiles every 460 px, edge tiles moved back to end at the edge,
visited x outer / y inner as the reference does, each place once."""

from __future__ import annotations

import json

import numpy as np

import pytest
from conftest import VECTOR_NAMES

from midog.config import DetectorConfig
from midog.detector.tiles import tile_origins


def test_known_grids():
    assert tile_origins(512, 512) == [(0, 0)]
    assert tile_origins(972, 512) == [(0, 0), (460, 0)]  # exactly one stride more
    assert tile_origins(973, 512) == [(0, 0), (460, 0), (461, 0)]  # edge tile moved back by 459
    # x outer, y inner; the last column and row end at the edge.
    assert tile_origins(1400, 1000) == [(x, y) for x in (0, 460, 888) for y in (0, 460, 488)]


def test_images_smaller_than_a_tile_get_one_origin_per_short_axis():
    assert tile_origins(300, 200) == [(0, 0)]
    assert tile_origins(100, 900) == [(0, 0), (0, 388)]


@pytest.mark.parametrize("width, height", [(513, 1024), (7215, 5412), (2000, 600), (1, 1)])
def test_tiles_cover_the_image_and_stay_inside(width, height):
    config = DetectorConfig()
    size = config.tile_size
    origins = tile_origins(width, height, config)
    assert len(origins) == len(set(origins))
    xs = sorted({x for x, _ in origins})
    ys = sorted({y for _, y in origins})
    assert origins == [(x, y) for x in xs for y in ys]
    for axis, dim in ((xs, width), (ys, height)):
        assert axis[0] == 0 and all(0 <= v <= max(0, dim - size) for v in axis)
        assert all(b - a <= config.stride for a, b in zip(axis, axis[1:]))  # overlap >= 52 px
        assert axis[-1] + size >= dim  # the last tile reaches the edge


def test_custom_tile_size_and_stride():
    assert tile_origins(250, 100, DetectorConfig(tile_size=100, stride=90)) == [(0, 0), (90, 0), (150, 0)]


def test_same_tiles_as_the_reference_visited(vectors_dir):
    visits = json.loads((vectors_dir / "tiles.json").read_text())
    for name in VECTOR_NAMES:
        width, height = (int(v) for v in name.split("_")[1].split("x"))
        reference = [tuple(xy) for xy in visits[name]["tiles_in_visit_order_x_y"]]
        # The reference may visit a place twice; the repeat gives identical detections.
        assert tile_origins(width, height) == list(dict.fromkeys(reference))


def test_read_tile_pads_partial_tiles_with_the_mean_colour():
    from midog.detector.tiles import pad_fill, read_tile

    class Pixels:  # the part of a Slide that read_tile uses
        def __init__(self, pixels):
            self.pixels, self.height, self.width = pixels, *pixels.shape[:2]

        def read_region(self, x, y, w, h):
            return self.pixels[y : y + h, x : x + w]

    pixels = np.random.default_rng(0).integers(0, 256, (300, 200, 3), dtype=np.uint8)
    slide = Pixels(pixels)
    assert pad_fill().tolist() == [191, 145, 184]  # the reference's mean x 255, rounded
    tile = read_tile(slide, 0, 0)
    assert tile.shape == (512, 512, 3)
    np.testing.assert_array_equal(tile[:300, :200], pixels)
    assert (tile[300:] == pad_fill()).all() and (tile[:, 200:] == pad_fill()).all()
    patch = read_tile(slide, 50, 100, size=224)  # a training patch crossing both edges
    assert patch.shape == (224, 224, 3)
    np.testing.assert_array_equal(patch[:200, :150], pixels[100:300, 50:200])
    assert (patch[200:] == pad_fill()).all() and (patch[:, 150:] == pad_fill()).all()
    np.testing.assert_array_equal(read_tile(slide, 10, 20, size=100), pixels[20:120, 10:110])


def test_image_store_reads_what_the_detector_reads(tmp_path):
    import tifffile

    from midog.slides.readers import open_slide
    from midog.detector.tiles import read_tile
    from midog.training.data import ImageRecord, ImageStore

    pixels = np.random.default_rng(2).integers(0, 256, (300, 700, 3), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "a.tiff", pixels, photometric="rgb", resolution=(40000, 40000), resolutionunit="CENTIMETER")
    record = ImageRecord(0, "a.tiff", tmp_path / "a.tiff", 700, 300, "s", 0, True)
    store = ImageStore()
    with open_slide(record.path) as slide:
        for x, y, size in [(0, 0, 512), (400, 100, 512), (30, 40, 224)]:
            np.testing.assert_array_equal(store.read(record, x, y, size), read_tile(slide, x, y, size=size))
    store.close()


def test_normalizer_equals_the_training_transform_bit_for_bit():
    """Training normalises as the reference's pil2tensor does (divide by 255 in float64,
    cast to float32, then (x - mean) / std); the detector's in-place float32 Normalizer
    gives the same bits for every uint8 value in every channel, so the two can share it."""
    import torch

    from midog.config import REFERENCE
    from midog.detector.tiles import Normalizer

    values = torch.arange(256, dtype=torch.uint8)
    tiles = torch.stack([values, values.flip(0), values.roll(85)], 1).view(1, 16, 16, 3)
    x = (tiles.permute(0, 3, 1, 2).double() / 255.0).float()
    training = (x - torch.tensor(REFERENCE.mean).view(1, 3, 1, 1)) / torch.tensor(REFERENCE.std).view(1, 3, 1, 1)
    assert torch.equal(Normalizer(REFERENCE)(tiles).contiguous(), training.contiguous())
