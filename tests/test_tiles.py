"""The tile grid: 512 px tiles every 460 px, edge tiles moved back to end at the edge,
visited x outer / y inner as the reference does, each place once."""

from __future__ import annotations

import json

import pytest
from conftest import VECTOR_NAMES

from midog.config import DetectorConfig
from midog.tiles import tile_origins


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
