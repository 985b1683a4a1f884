"""`midog adapt`: only the encoder's BatchNorm statistics change, every other tensor stays
bit-identical (dtype included), the metadata records the images and tiles, and the result
loads as a detector."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT
from crafted import write_tiff


def tissue_image(path: Path, size: int = 600, seed: int = 0) -> Path:
    """Pink-purple noise: saturated and darker than glass, so the thumbnail calls it tissue."""
    rng = np.random.default_rng(seed)
    base = np.array([190, 120, 180], np.int16)
    pixels = np.clip(base + rng.integers(-40, 40, (size, size, 3)), 0, 255).astype(np.uint8)
    return write_tiff(path, size, size, pixels, tile=256)


def test_adapt_changes_only_encoder_batchnorm_statistics(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    from midog.commands.cli import main
    from midog.detector import Detector

    weights = ROOT / "weights" / "demo-synthetic.pth"
    images = [tissue_image(tmp_path / "a.tiff"), tissue_image(tmp_path / "b.tiff", seed=1)]
    out = tmp_path / "adapted.pth"
    assert main(["adapt", *map(str, images), "--weights", str(weights), "-o", str(out), "--tiles-per-image", "2"]) == 0
    assert "on 4 tissue tiles of 2 image(s)" in capsys.readouterr().out
    before = torch.load(weights, map_location="cpu", weights_only=True)
    after = torch.load(out, map_location="cpu", weights_only=True)
    assert before["model"].keys() == after["model"].keys()
    stats = ("running_mean", "running_var", "num_batches_tracked")
    changed = []
    for key, old in before["model"].items():
        new = after["model"][key]
        assert new.dtype == old.dtype and new.shape == old.shape, key
        is_encoder_stat = key.startswith("encoder.") and key.endswith(stats)
        if not is_encoder_stat:
            assert torch.equal(new, old), f"{key} changed"
        elif not torch.equal(new, old):
            changed.append(key)
    means = [k for k in changed if k.endswith("running_mean")]
    assert len(means) == 20  # every BatchNorm of ResNet18's body: bn1, 16 in the blocks, 3 downsamples
    record = after["meta"]["adaptation"]
    assert record["images"] == [str(p) for p in images] and record["tiles"] == 4 and record["tiles_per_image"] == {"a.tiff": 2, "b.tiff": 2}
    assert after["meta"]["threshold"] == before["meta"]["threshold"]
    Detector.from_weights(out, "cpu")  # loads, folds the new statistics


def test_adapt_refuses_to_overwrite_its_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from midog.commands.cli import main

    weights = tmp_path / "w.pth"
    weights.write_bytes(b"x")
    image = tissue_image(tmp_path / "a.tiff", size=64)
    assert main(["adapt", str(image), "--weights", str(weights), "-o", str(weights)]) == 2
    assert "would overwrite --weights" in capsys.readouterr().err
