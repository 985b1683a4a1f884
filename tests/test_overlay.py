"""The overlay is written, has the size it promises, and shows the hotspot where it is."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from test_count import SIZE, SPACING, crafted_points, result_json, write_image

from midog.commands.cli import main
from midog.results.overlay import HOTSPOT_COLOUR, output_size


@pytest.mark.parametrize("shape", ["circle", "square"])
def test_overlay_shows_the_hotspot(shape, tmp_path):
    image = write_image(tmp_path / "region.tiff")
    pred = tmp_path / "pred.json"
    pred.write_text(json.dumps(result_json(crafted_points(np.random.default_rng(1)), "2022")))
    picture = tmp_path / "overlay.png"
    args = ["count", str(pred), "--image", str(image), "--area-mm2", "0.25", "--shape", shape, "-o", str(tmp_path / "c.json")]
    assert main([*args, "--overlay", str(picture), "--heatmap"]) == 0
    spot = json.loads((tmp_path / "c.json").read_text())["hotspot"]

    pixels = np.asarray(Image.open(picture).convert("RGB")).astype(int)
    width, height = output_size(SIZE, SPACING)
    assert pixels.shape == (height, width, 3) and max(width, height) == 1600
    # The image is 2.0 x 1.2 mm drawn at `scale` px per mm; the outline's gold lies about
    # one radius (half side) from the centre, and nowhere near the look-alikes' cluster.
    scale = width / (SIZE[0] * SPACING[0])
    gold = (np.abs(pixels - np.array(HOTSPOT_COLOUR) * 255).max(2) < 40)
    ys, xs = np.nonzero(gold)
    cx, cy = np.array(spot["center_mm"]) * scale
    reach = (np.sqrt(0.25 / np.pi) if shape == "circle" else np.sqrt(0.25) / 2) * scale
    dist = np.hypot(xs - cx, ys - cy) if shape == "circle" else np.maximum(abs(xs - cx), abs(ys - cy))
    on_outline = np.abs(dist - reach) < 6
    assert on_outline.sum() > 500  # a drawn outline, not stray pixels
    assert (dist <= reach + 50).mean() > 0.95  # gold only on the outline and the count by it
    lookalikes = np.array([1.1, 0.6]) * scale
    assert np.hypot(xs - lookalikes[0], ys - lookalikes[1]).min() > 50
