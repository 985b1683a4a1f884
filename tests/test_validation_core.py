"""Training validation runs the inference core: the candidates it scores above the
operating point are the points `midog detect` writes for the same weights and image."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "weights" / "demo-synthetic.pth"


@pytest.fixture(scope="module")
def synthetic_record(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    from midog.synth import make_dataset
    from midog.training.data import load_midog

    out = tmp_path_factory.mktemp("synth")
    # 600 x 560: a tile grid with partial tiles on both axes, so padding and overlap count.
    make_dataset(out, seed=3, images_per_scanner=1, size=(600, 560), workers=1)
    records = [r for r in load_midog(out / "MIDOG.json").records if r.labelled]
    return records[0]


def test_validation_candidates_equal_midog_detect(synthetic_record, tmp_path: Path) -> None:
    from midog.commands.detect import run_detect
    from midog.detector import Detector
    from midog.pipeline.run import settle_run
    from midog.network.retinanet import load_model
    from midog.training.validate import evaluate_images, predict_image, validation_detector

    target = tmp_path / "out.json"
    assert run_detect([synthetic_record.path], settle_run(DEMO, device="cpu"), target, progress=False) == 0
    written = np.asarray([p["point"] for p in json.loads(target.read_text())["points"]], np.float64)
    assert len(written) > 0, "the demo weights find nothing on this image: the comparison would be empty"

    # The network as a training run holds it: in train mode, with gradients.
    model, _ = load_model(DEMO, "cpu")
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    found = predict_image(validation_detector(model), synthetic_record, min_score=0.05)
    threshold = Detector.from_weights(DEMO, "cpu").threshold  # the operating point `midog detect` used
    above = found.at_threshold(threshold).mitotic_figures()
    ours = np.column_stack([above.xy_mm, np.zeros(len(above))])
    assert len(found) > len(above), "validation must also see candidates below the operating point"
    np.testing.assert_array_equal(ours, written)

    # Validation leaves the training model as it was: no folding, still in train mode.
    assert model.training
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)

    metrics = evaluate_images(model, [synthetic_record], min_score=0.05)
    assert 0.0 <= metrics.aucpr <= 1.0 and 0.05 <= metrics.threshold < 1.0


def gpu_flags() -> tuple[bool, bool, bool]:
    b = torch.backends
    return b.cudnn.allow_tf32, b.cuda.matmul.allow_tf32, b.cudnn.benchmark


def test_detector_scopes_gpu_flags_to_its_own_forward() -> None:
    from midog.detector import Detector
    from midog.network.retinanet import load_model

    model, meta = load_model(DEMO, "cpu")
    saved = (True, True, False)  # a training run's own choice: TF32 on, no autotuner
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.benchmark = False
    try:
        det = Detector(model, meta=meta)
        assert gpu_flags() == saved, "building a Detector must not change process-wide flags"
        det.device = torch.device("cuda")  # the flags are plain settings: checkable without a GPU
        with det._precision():
            assert gpu_flags() == (False, False, True)  # exact float32 and the autotuner, for its forward
        assert gpu_flags() == saved
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.benchmark = saved


def test_detector_keeps_the_model_and_folds_a_copy() -> None:
    from midog.detector import Detector
    from midog.network.retinanet import load_model

    model, meta = load_model(DEMO, "cpu")
    det = Detector(model, meta=meta)
    assert det.model is not model
    assert isinstance(model.encoder[1], torch.nn.BatchNorm2d)  # the original keeps its BatchNorm
    assert isinstance(det.model.encoder[1], torch.nn.Identity)  # the copy has it folded
    assert det.threshold == Detector.from_weights(DEMO, "cpu").threshold  # the checkpoint's operating point
