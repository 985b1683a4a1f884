"""`midog train --init IN.pth` on a review page's labels file: fine-tuning runs end to end on
a CI-size case, starts from IN.pth's tensors, takes the fine-tuning defaults for options not
given, and writes best.pth with its own validated operating point."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import ROOT


def labels_file(midog_json: Path, ids: set[int]) -> Path:
    """The review page's layout (MIDOG.json's, spacing beside each image, unsure points apart)
    for the images `ids` of a synthetic set."""
    data = json.loads(midog_json.read_text())
    images = [{**im, "spacing_mm": [0.00025, 0.00025]} for im in data["images"] if im["id"] in ids]
    annotations = [a for a in data["annotations"] if a["image_id"] in ids]
    out = midog_json.parent / "slides.labels.json"
    out.write_text(json.dumps({"images": images, "categories": data["categories"], "annotations": annotations, "unsure": []}))
    return out


def test_fine_tuning_from_a_labels_file_runs_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    from midog.commands.cli import main
    from midog.synth import make_dataset

    make_dataset(tmp_path / "data", seed=2, images_per_scanner=2, size=(320, 320))
    labels = labels_file(tmp_path / "data" / "MIDOG.json", {1, 2})
    init = ROOT / "weights" / "demo-synthetic.pth"
    run = tmp_path / "run"
    rc = main(["train", str(labels), "--images", str(tmp_path / "data"), "--init", str(init), "-o", str(run),
               "--epochs", "1", "--train-patches", "2", "--val-patches", "1", "--patch-size", "224", "--per-scanner", "1",
               "--val-per-scanner", "1", "--threads", "1", "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    best = torch.load(run / "best.pth", map_location="cpu", weights_only=True)
    meta = best["meta"]
    assert meta["backbone_init"] == f"init {init}" and meta["train"]["init"] == str(init)
    # Fine-tuning defaults for what was not given; what was given wins.
    assert meta["train"]["optim"]["max_lr"] == 2e-5 and meta["recipe"]["domain_weight"] == 0.0
    assert meta["train"]["optim"]["epochs"] == 1
    assert 0.0 < meta["threshold"] < 1.0 and meta["data"]["images"]["valid"]
    start = torch.load(init, map_location="cpu", weights_only=True)["model"]
    moved = [k for k, v in start.items() if v.is_floating_point() and not torch.equal(v.float(), best["model"][k].float())]
    assert moved  # trained from IN.pth's tensors, not from scratch: most stay close
    assert torch.allclose(start["classifier.3.bias"].float(), best["model"]["classifier.3.bias"].float(), atol=0.05)


def test_init_refuses_weights_of_another_network(tmp_path: Path) -> None:
    import torch

    from midog.errors import MidogError
    from midog.network.retinanet import RetinaNetDA
    from midog.training.checkpoints import init_from

    bad = tmp_path / "bad.pth"
    torch.save({"conv.weight": torch.zeros(1)}, bad)
    with pytest.raises(MidogError, match="not RetinaNetDA weights to fine-tune"):
        init_from(RetinaNetDA(), str(bad))
