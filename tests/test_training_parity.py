"""Training-objective parity: our data path, matching, losses and schedules against values
made by running the reference's own training code (a `batch.npz` case folder).

The case folder is `$MIDOG_TRAINING_VECTORS`, default `../shared/reference-vectors/training`;
the image its `image_name` key names lies in the folder above it. Without the variable an
absent folder skips; with it, an absent folder fails. Everything below runs the project's
code (patch reading, box keeping, collation, normalisation, matching, losses, schedule);
the test only compares.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import ROOT, VECTORS, build_vector_weights, weights_sha256, VECTOR_WEIGHTS_SHA256

DEFAULT_CASE = ROOT.parent / "shared" / "reference-vectors" / "training"
UNLABELLED_DOMAIN = 3  # GT450 in the reference's batches
# Tolerances of the vectors' README.
LOSS_RTOL = 1e-5
GRAD_ATOL = 1e-6
SCHED_RTOL = 1e-12


def case_dir() -> Path:
    env = os.environ.get("MIDOG_TRAINING_VECTORS")
    if env:
        path = Path(env)
        assert (path / "batch.npz").is_file(), f"MIDOG_TRAINING_VECTORS={env}: no batch.npz there"
        return path
    if not (DEFAULT_CASE / "batch.npz").is_file():
        pytest.skip(f"{DEFAULT_CASE} is absent: this check needs ../shared beside the project")
    return DEFAULT_CASE


def cases(z) -> list[str]:
    return sorted({k.split("_", 1)[0] for k in z.files if k.endswith("_origins_xy")})


def golden_model(folder: Path):
    from midog.network.retinanet import RetinaNetDA

    keys = next((p for p in (folder.parent / "state_dict_keys.txt", VECTORS / "state_dict_keys.txt") if p.is_file()), None)
    assert keys is not None, f"state_dict_keys.txt (the golden weights' rule) is neither beside {folder} nor in {VECTORS}"
    state = build_vector_weights(keys)
    assert weights_sha256(state) == VECTOR_WEIGHTS_SHA256
    model = RetinaNetDA()
    model.load_state_dict(state)
    return model.eval()  # the vectors were made in eval mode (running BatchNorm, no dropout)


def run_case(z, folder: Path, case: str, model) -> dict[str, np.ndarray]:
    """Our code on one case: returns every quantity the file pins, under the file's keys."""
    from midog.network.anchors import make_anchors
    from midog.training.data import ImageRecord, ImageStore
    from midog.training.losses import domain_focal_loss, total_loss
    from midog.training.loop import make_batch
    from midog.training.matching import collate_boxes, unpad
    from midog.training.sampler import Patch, boxes_in_patch

    size = 512
    image = folder.parent / str(z["image_name"])
    assert image.is_file(), f"{image}: the case's image is missing"
    from PIL import Image

    with Image.open(image) as im:
        width, height = im.size
    gt = np.asarray(z["gt_boxes_image_x1y1x2y2"], np.float32)
    record = ImageRecord(0, image.name, image, width, height, "vector", 0, True, gt, np.ones(len(gt), np.int64))
    store = ImageStore()
    patches = []
    for (x, y), d in zip(z[f"{case}_origins_xy"].tolist(), z[f"{case}_domains"].tolist()):
        labelled = d != UNLABELLED_DOMAIN
        # The reference offers every box to every patch and keeps those centred strictly inside.
        patches.append(Patch(store.read(record, x, y, size), boxes_in_patch(record.mitoses(), x, y, size), d, labelled))
    store.close()
    anchors = make_anchors(tile_size=size)
    batch = make_batch(patches, anchors, size)

    out: dict[str, np.ndarray] = {"anchors_cthw": anchors.numpy()}
    x = batch.x.double()
    out[f"{case}_input_sum"] = x.sum().numpy()
    out[f"{case}_input_sumsq"] = (x * x).sum().numpy()
    out[f"{case}_input_sum_per_patch"] = x.sum((1, 2, 3)).numpy()
    boxes, labels = collate_boxes([p.boxes for p in patches], size)
    out[f"{case}_collated_bboxes"], out[f"{case}_collated_labels"] = boxes.numpy(), labels.numpy()
    out[f"{case}_domains"] = batch.domains.numpy()

    logits, deltas, dom = model.forward_train(batch.x, 1.0)
    for t in (logits, deltas, dom):
        t.retain_grad()
    parts = total_loss(logits, deltas, dom, batch.matches, batch.targets, batch.domains, batch.labelled)
    parts.total.backward()

    n_pos = []
    for i, m in enumerate(batch.matches):
        p = f"{case}_p{i}"
        tgt, _ = unpad(boxes[i], labels[i])
        out[f"{p}_unpadded_targets_cthw"] = tgt.numpy()
        out[f"{p}_boxes_patch_tlbr_yx_unit"] = boxes[i][labels[i] > 0].numpy()
        out[f"{p}_matches"] = m.numpy()
        pos = m >= 0
        n_pos.append(int(pos.sum()))
        out[f"{p}_n_pos_per_gt"] = np.bincount(m[pos].numpy(), minlength=int((labels[i] > 0).sum()))
        out[f"{p}_n_ignored"] = np.asarray(int((m == -2).sum()))
        out[f"{p}_grad_cls_at_pos"] = logits.grad[i][pos].numpy()
        out[f"{p}_grad_box_at_pos"] = deltas.grad[i][pos].numpy()
    out[f"{case}_n_pos"] = np.asarray(n_pos)
    out[f"{case}_reg_loss_per_patch"] = parts.box_per_patch.numpy()
    out[f"{case}_cls_loss_per_patch"] = parts.cls_per_patch.numpy()
    out[f"{case}_det_loss_per_patch"] = (parts.box_per_patch + parts.cls_per_patch).numpy()
    lab = batch.labelled
    out[f"{case}_metric_BBloss"] = (parts.box_per_patch[lab].sum() / lab.sum()).numpy()
    out[f"{case}_metric_focal_loss"] = (parts.cls_per_patch[lab].sum() / lab.sum()).numpy()
    out[f"{case}_metric_domain_loss"] = parts.domain.numpy()  # the batch-mean focal / B, as added
    out[f"{case}_domain_logits"] = dom.detach().numpy()
    out[f"{case}_domain_loss"] = domain_focal_loss(dom.detach(), batch.domains).numpy()
    out[f"{case}_total_loss"] = parts.total.detach().numpy()
    out[f"{case}_grad_domain_logits"] = dom.grad.numpy()
    out[f"{case}_grad_cls_sum"] = logits.grad.double().sum((1, 2)).numpy()
    out[f"{case}_grad_cls_abssum"] = logits.grad.double().abs().sum((1, 2)).numpy()
    out[f"{case}_grad_box_sum"] = deltas.grad.double().sum((1, 2)).numpy()
    out[f"{case}_grad_box_abssum"] = deltas.grad.double().abs().sum((1, 2)).numpy()
    out[f"{case}_cls_logits_sum"] = logits.detach().double().sum((1, 2)).numpy()
    out[f"{case}_box_deltas_sum"] = deltas.detach().double().sum((1, 2)).numpy()
    unit = torch.as_tensor(z[f"{case}_unit_domain_logits_div32"], dtype=torch.float32)
    out[f"{case}_unit_domain_focal_loss"] = domain_focal_loss(unit, batch.domains).numpy()
    out[f"{case}_unit_NOT_reference_per_sample_focal"] = domain_focal_loss(unit, batch.domains, mode="per_sample").numpy()
    return out


def run_schedules(z) -> dict[str, np.ndarray]:
    from midog.training.schedule import OneCycle, grl_alpha

    out = {}
    for pre in sorted({k.split("_", 1)[0] for k in z.files if k.startswith("sched")}):
        epochs, per_epoch = int(z[f"{pre}_n_epochs"]), int(z[f"{pre}_steps_per_epoch"])
        sched = OneCycle(epochs * per_epoch)  # max LR 1e-4: the reference's fit_one_cycle(…, slice(1e-4))
        out[f"{pre}_warmup_steps_a1"] = np.asarray(sched.a1)
        q = z[f"{pre}_query_steps"].tolist()
        out[f"{pre}_lr_at_query"] = np.array([sched.lr(k) for k in q])
        out[f"{pre}_mom_at_query"] = np.array([sched.momentum(k) for k in q])
        out[f"{pre}_lr_epoch_start"] = np.array([sched.lr(e * per_epoch) for e in range(epochs)])
        out[f"{pre}_mom_epoch_start"] = np.array([sched.momentum(e * per_epoch) for e in range(epochs)])
        out[f"{pre}_grl_alpha_per_epoch"] = np.array([grl_alpha(e, epochs) for e in range(epochs)])
    return out


EXACT = ("_collated_labels", "_domains", "_matches", "_n_pos", "_n_pos_per_gt", "_n_ignored", "_warmup_steps_a1")
EXACT_FLOAT = ("_collated_bboxes", "_unpadded_targets_cthw", "_boxes_patch_tlbr_yx_unit", "anchors_cthw")
GRADS = ("_grad_domain_logits", "_grad_cls_at_pos", "_grad_box_at_pos")
LOSSES = (
    "_reg_loss_per_patch", "_cls_loss_per_patch", "_det_loss_per_patch", "_domain_loss", "_total_loss",
    "_unit_domain_focal_loss", "_unit_NOT_reference_per_sample_focal", "_domain_logits",
    "_cls_logits_sum", "_box_deltas_sum", "_metric_BBloss", "_metric_focal_loss", "_metric_domain_loss",
)
SCHED = ("_lr_at_query", "_mom_at_query", "_lr_epoch_start", "_mom_epoch_start", "_grl_alpha_per_epoch")
INPUT = ("_input_sum", "_input_sumsq", "_input_sum_per_patch")


def check(expected, ours: dict[str, np.ndarray]) -> int:
    """Assert every key of `ours` against `expected` at the README's tolerance; returns how
    many keys were compared."""
    assert ours, "nothing was computed"
    for key, got in ours.items():
        assert key in expected.files, f"{key}: not in the case file"
        want = expected[key]
        msg = f"{key}: ours {np.asarray(got).ravel()[:6]} vs reference {np.asarray(want).ravel()[:6]}"
        assert np.shape(got) == np.shape(want), f"{key}: shape {np.shape(got)} vs {np.shape(want)}"
        if key.endswith(EXACT):
            assert np.array_equal(got, want), msg
        elif key.endswith(EXACT_FLOAT):
            assert np.array_equal(np.asarray(got, np.float32), np.asarray(want, np.float32)), msg
        elif key.endswith(GRADS):
            np.testing.assert_allclose(got, want, rtol=0, atol=GRAD_ATOL, err_msg=msg)
        elif key.endswith(SCHED):
            np.testing.assert_allclose(got, want, rtol=SCHED_RTOL, atol=0, err_msg=msg)
        elif key.endswith(LOSSES) or key.endswith(INPUT):
            np.testing.assert_allclose(got, want, rtol=LOSS_RTOL, atol=1e-30, err_msg=msg)
        elif "_grad_" in key:  # sums of 10^5 gradients: accumulation order costs a little
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=GRAD_ATOL, err_msg=msg)
        else:
            raise AssertionError(f"{key}: no tolerance assigned")
    return len(ours)


@pytest.fixture(scope="module")
def case_results() -> tuple[Path, dict[str, np.ndarray]]:
    folder = case_dir()
    with np.load(folder / "batch.npz") as z:
        model = golden_model(folder)
        ours: dict[str, np.ndarray] = {}
        for case in cases(z):
            ours.update(run_case(z, folder, case, model))
        ours.update(run_schedules(z))
    return folder, ours


def test_objective_matches_the_reference(case_results) -> None:
    folder, ours = case_results
    with np.load(folder / "batch.npz") as z:
        assert cases(z), "no case in the file"
        n = check(z, ours)
        # Every match, loss and schedule key the file holds was compared.
        pinned = [k for k in z.files if k.endswith(EXACT + GRADS + LOSSES + SCHED) and not k.endswith("_f64")]
        missing = sorted(set(pinned) - set(ours))
        assert not missing, f"keys not checked: {missing}"
    assert n > 50


def test_a_one_percent_change_in_any_expected_loss_fails(case_results, tmp_path: Path) -> None:
    folder, ours = case_results
    with np.load(folder / "batch.npz") as z:
        original = {k: z[k] for k in z.files}
    losses = [k for k in original if k.endswith(("_reg_loss_per_patch", "_cls_loss_per_patch", "_det_loss_per_patch", "_domain_loss", "_total_loss", "_unit_domain_focal_loss"))]
    assert len(losses) >= 10
    changed = 0
    for key in losses:
        for j in range(original[key].size):
            if original[key].flat[j] == 0:
                continue  # a zero loss (empty patch's regression) has no 1% change
            mutated = dict(original)
            mutated[key] = original[key].copy()
            mutated[key].flat[j] *= 1.01
            path = tmp_path / "batch.npz"
            np.savez(path, **mutated)
            with np.load(path) as z:
                with pytest.raises(AssertionError):
                    check(z, ours)
            changed += 1
    assert changed >= 20


def test_variable_set_to_a_missing_folder_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MIDOG_TRAINING_VECTORS", str(tmp_path / "nowhere"))
    with pytest.raises(AssertionError):
        case_dir()


def test_another_case_through_the_variable(case_results, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same file copied elsewhere (with its image above it) runs through the variable."""
    folder, _ = case_results
    with np.load(folder / "batch.npz") as z:
        image = str(z["image_name"])
    (tmp_path / "case").mkdir()
    shutil.copy(folder / "batch.npz", tmp_path / "case" / "batch.npz")
    shutil.copy(folder.parent / image, tmp_path / image)
    monkeypatch.setenv("MIDOG_TRAINING_VECTORS", str(tmp_path / "case"))
    assert case_dir() == tmp_path / "case"
    with np.load(tmp_path / "case" / "batch.npz") as z:
        ours = run_schedules(z)
        ours.update(run_case(z, tmp_path / "case", "A", golden_model(tmp_path / "case")))
        check(z, ours)
