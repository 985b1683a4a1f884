"""Training package: data reading, splits, sampling, augmentation, matching, losses, and
small end-to-end runs on a tiny synthetic set (loss falls; stop + resume = uninterrupted)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from midog.config import OptimConfig
from midog.errors import MidogError
from midog.training import data as tdata
from midog.training.augment import AugmentConfig, augment_batch, transform_boxes
from midog.training.losses import domain_focal_loss, focal_loss, patch_losses, total_loss
from midog.training.matching import BACKGROUND, IGNORE, build_targets, match, pixel_boxes_to_cthw
from midog.training.sampler import boxes_in_patch, patch_origin

from conftest import SHARED, need_shared


# ---------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------


def test_real_midog_json_counts_per_scanner_and_category() -> None:
    ds = tdata.load_midog(need_shared(SHARED / "midog" / "MIDOG.json"))
    c = tdata.counts(ds)
    assert len(ds.records) == 200
    assert sum(v.get(1, 0) for v in c.values()) == 1721
    assert sum(v.get(2, 0) for v in c.values()) == 2714
    assert c == {
        "Hamamatsu XR": {1: 451, 2: 724},
        "Hamamatsu S360": {1: 582, 2: 1066},
        "Aperio CS2": {1: 688, 2: 924},
        "Leica GT450": {},
    }
    assert [sum(r.scanner == s for r in ds.records) for s in ds.scanners] == [50, 50, 50, 50]
    assert not any(r.labelled for r in ds.records if r.scanner == "Leica GT450")
    # Every MIDOG box is 50 x 50 px: proves bbox is read as x1, y1, x2, y2.
    sizes = np.concatenate([r.boxes[:, 2:] - r.boxes[:, :2] for r in ds.records if len(r.boxes)])
    assert np.all(sizes == 50)


def test_reference_split_file_is_40_10_per_scanner() -> None:
    ds = tdata.load_midog(need_shared(SHARED / "midog" / "MIDOG.json"))
    parts = tdata.apply_split(ds, tdata.read_split_file(need_shared(SHARED / "midog" / "train_val_split.txt")))
    for s in ds.scanners:
        assert sum(r.scanner == s for r in parts["train"]) == 40
        assert sum(r.scanner == s for r in parts["valid"]) == 10


def _coco(tmp_path: Path, bbox: list[float]) -> Path:
    p = tmp_path / "MIDOG.json"
    p.write_text(json.dumps({
        "images": [{"id": i, "file_name": f"{i:03d}.tiff", "width": 100, "height": 100} for i in range(1, 201)],
        "annotations": [{"id": 1, "image_id": 3, "category_id": 1, "bbox": bbox}],
    }))
    return p


def test_coco_xywh_only_on_request(tmp_path: Path) -> None:
    ds = tdata.load_midog(_coco(tmp_path, [10, 20, 50, 50]), box_format="xywh")
    assert ds.by_name()["003.tiff"].boxes.tolist() == [[10, 20, 60, 70]]
    ds = tdata.load_midog(_coco(tmp_path, [10, 20, 60, 70]))
    assert ds.by_name()["003.tiff"].boxes.tolist() == [[10, 20, 60, 70]]
    with pytest.raises(MidogError, match="xywh"):
        tdata.load_midog(_coco(tmp_path, [10, 20, 5, 5]))  # x,y,w,h read as corners is empty


def test_seeded_split_is_per_scanner_and_reproducible(tmp_path: Path) -> None:
    ds = tdata.load_midog(_coco(tmp_path, [10, 20, 60, 70]))
    a = tdata.seeded_split(ds, seed=3)
    assert a == tdata.seeded_split(ds, seed=3) != tdata.seeded_split(ds, seed=4)
    parts = tdata.apply_split(ds, a)
    assert [sum(r.scanner == s for r in parts["valid"]) for s in ds.scanners] == [10] * 4
    b = tdata.apply_split(ds, tdata.seeded_split(ds, val_per_scanner=2, test_per_scanner=3))
    assert (len(b["train"]), len(b["valid"]), len(b["test"])) == (180, 8, 12)


# ---------------------------------------------------------------------------
# Sampling, augmentation, matching, losses
# ---------------------------------------------------------------------------


def test_positive_patches_contain_their_figure() -> None:
    rec = tdata.ImageRecord(1, "a", Path("a"), 1000, 800, "s", 0, True, np.array([[500, 400, 550, 450]], np.float32), np.array([1]))
    rng = np.random.default_rng(0)
    for _ in range(50):
        x, y = patch_origin(rec, 256, rng, positive_fraction=1.0)
        assert 0 <= x <= 1000 - 256 and 0 <= y <= 800 - 256
        assert x <= 500 <= x + 256 and y <= 400 <= y + 256
    kept = boxes_in_patch(np.array([[10, 10, 60, 60], [220, 220, 270, 270], [300, 0, 350, 50]], np.float32), 0, 0, 256)
    assert kept.tolist() == [[10, 10, 60, 60], [220, 220, 256, 256]]


def test_flip_moves_boxes_with_the_pixels() -> None:
    img = torch.zeros(1, 3, 64, 64)
    img[:, :, 10:20, 4:14] = 1.0  # rows 10-19, columns 4-13
    flip_x = AugmentConfig(p=1.0, max_rotate_deg=0, max_zoom=1.0, max_warp=0.0, max_lighting=0.0)

    class OnlyFirst:  # draws: flip x yes, everything else no
        def __init__(self) -> None:
            self.n = 0

        def random(self) -> float:
            self.n += 1
            return 0.0 if self.n == 1 else 1.0

        def uniform(self, a: float, b: float, size: int | None = None):  # noqa: ANN201
            return np.full(size, a) if size else a

    out, boxes = augment_batch(img, [np.array([[4, 10, 14, 20]], np.float32)], OnlyFirst(), flip_x)
    assert np.allclose(boxes[0], [[50, 10, 60, 20]], atol=1e-4)
    ys, xs = torch.nonzero(out[0, 0] > 0.5, as_tuple=True)
    assert (xs.min().item(), xs.max().item(), ys.min().item(), ys.max().item()) == (50, 59, 10, 19)


def test_rotation_keeps_cell_box_size() -> None:
    a = math.radians(10)
    m = np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]])
    out = transform_boxes(np.array([[100, 100, 150, 150]], np.float32), m, 256)
    assert np.allclose(out[0, 2:] - out[0, :2], 50, atol=0.5)


def test_matching_thresholds() -> None:
    anchors = torch.tensor([[0.0, 0.0, 0.4, 0.4], [0.0, 0.06, 0.4, 0.4], [0.5, 0.5, 0.4, 0.4], [0.0, 0.0, 0.3, 0.3]])
    gt = torch.tensor([[0.0, 0.0, 0.4, 0.4]])
    # IoU 1, 0.74 (shifted 0.06 of 0.4), 0, 0.5625
    assert match(anchors, gt).tolist() == [0, 0, BACKGROUND, 0]
    assert match(anchors, gt, fg_iou=0.6).tolist() == [0, 0, BACKGROUND, IGNORE]
    assert match(anchors, gt[:0]).tolist() == [BACKGROUND] * 4
    # Pixels to anchor units: a 64 px box at the centre of a 256 patch.
    assert torch.allclose(pixel_boxes_to_cthw(np.array([[96, 112, 160, 176]]), 256), torch.tensor([[0.125, 0.0, 0.5, 0.5]]))


def test_targets_decode_back_to_the_box() -> None:
    from midog.network.anchors import make_anchors
    from midog.network.box_coding import decode

    anchors = make_anchors(tile_size=256)
    box = np.array([[100, 60, 150, 110]], np.float32)
    m, t = build_targets(anchors, [box], 256)
    fg = m[0] >= 0
    assert int(fg.sum()) > 0
    decoded = decode(t[0][fg], anchors[fg])
    assert torch.allclose(decoded, pixel_boxes_to_cthw(box, 256).expand_as(decoded), atol=1e-5)


def test_focal_weights_and_domain_focal() -> None:
    z = torch.zeros(1)
    # p = 0.5: (1 - pt)^2 = 0.25; positives weighted 0.75, negatives 0.25.
    assert torch.isclose(focal_loss(z, torch.ones(1)), torch.tensor(0.75 * 0.25 * math.log(2)))
    assert torch.isclose(focal_loss(z, torch.zeros(1)), torch.tensor(0.25 * 0.25 * math.log(2)))
    ce = math.log(4)
    assert torch.isclose(domain_focal_loss(torch.zeros(1, 4), torch.tensor([2])), torch.tensor(0.25 * 0.75**2 * ce))


def test_unlabelled_images_give_no_detection_loss() -> None:
    logits, deltas = torch.randn(2, 10, 2), torch.randn(2, 10, 4)
    matches = torch.full((2, 10), BACKGROUND)
    targets = torch.zeros(2, 10, 4)
    both = total_loss(logits, deltas, None, matches, targets, torch.tensor([0, 3]), torch.tensor([True, False]))
    one = total_loss(logits[:1], deltas[:1], None, matches[:1], targets[:1], torch.tensor([0]), torch.tensor([True]))
    assert torch.isclose(both.detection, one.detection)


# ---------------------------------------------------------------------------
# End to end on a tiny synthetic set
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from midog.synth import make_dataset

    out = tmp_path_factory.mktemp("synth")
    make_dataset(out, seed=1, images_per_scanner=2, size=(320, 320))
    return out / "MIDOG.json"


def _cfg(annotations: Path, out: Path, **kw):  # noqa: ANN202
    from midog.training.loop import run_config

    base = dict(
        patch_size=224, per_scanner=1, train_patches=2,
        val_patches=1, epochs=2, max_lr=1e-3, backbone="none", val_per_scanner=1, progress=False, threads=1, amp="bf16",
    )
    base.update(kw)
    return run_config(annotations, out, **base)


def test_loss_falls_on_a_tiny_synthetic_set(tiny_set: Path, tmp_path: Path) -> None:
    from midog.training.loop import Trainer

    t = Trainer(_cfg(tiny_set, tmp_path, epochs=1, train_patches=12, positive_fraction=1.0))
    rng = np.random.default_rng(0)
    patches = t.train_sampler.batch(rng)
    assert any(len(p.boxes) for p in patches)
    t.model.train()
    for group in t.opt.param_groups:  # the one-cycle warm-up would start 25x lower
        group["lr"] = 3e-4
    losses = []
    for _ in range(6):
        parts = t.batch_loss(patches, np.random.default_rng(1), False, 0.5)
        t.opt.zero_grad()
        parts.total.backward()
        t.opt.step()
        losses.append(parts.detection.item())
    assert losses[-1] < 0.7 * losses[0], losses


def test_stop_and_resume_equals_uninterrupted(tiny_set: Path, tmp_path: Path) -> None:
    from midog.network.retinanet import load_model
    from midog.training.checkpoints import export_weights
    from midog.training.loop import train

    # Validation only at the last epoch keeps this test fast.
    full = train(_cfg(tiny_set, tmp_path / "a", val_every=2))
    part = train(_cfg(tiny_set, tmp_path / "b", val_every=2), stop_after=1)
    assert part["epochs_done"] == 1
    with pytest.raises(MidogError, match="resume"):
        train(_cfg(tiny_set, tmp_path / "b", val_every=2))
    resumed = train(_cfg(tiny_set, tmp_path / "b", val_every=2), resume=True)
    assert resumed["epochs_done"] == full["epochs_done"] == 2

    a = torch.load(tmp_path / "a" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "last.pt", weights_only=True)
    assert a["step"] == b["step"] == 4
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    drop = ("seconds", "patches_per_s")
    assert [{k: v for k, v in r.items() if k not in drop} for r in a["rows"]] == [
        {k: v for k, v in r.items() if k not in drop} for r in b["rows"]
    ]
    for name in ("log.csv", "curves.png", "best.pth", "split.json"):
        assert (tmp_path / "b" / name).is_file()

    # The selected checkpoint loads in the detection core with its operating point.
    model, meta = load_model(tmp_path / "b" / "best.pth")
    assert 0 < meta["threshold"] < 1 and meta["data"]["annotations_sha256"]
    assert meta["normalisation"]["mean"] == [0.7481, 0.5692, 0.7225]
    # The checkpoint records the run's whole configuration, every concern.
    assert meta["train"] == json.loads(json.dumps(_cfg(tiny_set, tmp_path / "b", val_every=2).to_dict()))
    assert meta["train"]["objective"] == meta["recipe"] and meta["train"]["sampling"]["patch_size"] == 224
    half = export_weights(tmp_path / "b" / "best.pth", tmp_path / "half.pth")
    _, meta_half = load_model(half)
    assert meta_half["threshold"] == meta["threshold"]
    with pytest.raises(MidogError, match="differ"):
        train(_cfg(tiny_set, tmp_path / "b", epochs=3), resume=True)


def test_cli_registers_train() -> None:
    from midog.commands.cli import build_parser

    from midog.config import AugmentConfig, OptimConfig, Recipe
    from midog.commands.train import config_from_args

    args = build_parser().parse_args(["train", "x/MIDOG.json", "--out", "r", "--domain-weight", "0", "--amp", "bf16"])
    cfg = config_from_args(args)
    assert cfg.data.annotations == "x/MIDOG.json" and cfg.out_dir == "r" and cfg.amp == "bf16"
    assert cfg.objective.domain_weight == 0 and cfg.objective.name == "reference+custom"
    assert cfg.optim == OptimConfig() and cfg.optim.epochs == 200 and cfg.optim.max_lr == 1e-4
    s = cfg.sampling
    assert s.patch_size == 512 and s.per_scanner == 3 and s.train_patches == 1500 and s.val_patches == 500
    assert cfg.augment == AugmentConfig() and cfg.data.box_format == "xyxy" and cfg.progress

    # Every concern can be changed from the command line, the recipe flags over the named recipe.
    args = build_parser().parse_args([
        "train", "x/MIDOG.json", "-o", "r", "--recipe", "improved", "--detach-laterals", "--focal-gamma", "1.5",
        "--match-fg-iou", "0.6", "--betas", "0.8", "0.9", "--max-zoom", "1.5", "--no-augment", "--coco-xywh",
        "--threads", "2", "--no-progress", "--focal-weights", "detached",
    ])
    cfg = config_from_args(args)
    assert cfg.objective == Recipe(
        "improved+custom", detach_laterals=True, detach_focal_weights=True, normalise="batch", domain_focal="per_sample",
        match_fg_iou=0.6, focal_gamma=1.5,
    )
    assert cfg.optim.betas == (0.8, 0.9) and cfg.augment.max_zoom == 1.5 and not cfg.augment.enabled
    assert cfg.data.box_format == "xywh" and cfg.threads == 2 and not cfg.progress


# ---------------------------------------------------------------------------
# Recipe: the reference's objective by default, each departure one option away
# ---------------------------------------------------------------------------


def test_focal_weights_are_constants_in_the_reference_recipe() -> None:
    logits = torch.tensor([-1.0, 0.3, 2.0], requires_grad=True)
    t = torch.tensor([1.0, 0.0, 1.0])
    ref = focal_loss(logits, t)
    (g_ref,) = torch.autograd.grad(ref, logits)
    imp = focal_loss(logits, t, detach_weights=False)
    (g_imp,) = torch.autograd.grad(imp, logits)
    assert torch.isclose(ref, imp)  # same value ...
    assert not torch.allclose(g_ref, g_imp, atol=1e-4)  # ... different gradient
    p = torch.sigmoid(logits.detach())
    w = torch.where(t > 0, 0.75 * (1 - p) ** 2, 0.25 * p**2)
    assert torch.allclose(g_ref, w * (p - t))  # BCE gradient times the constant weight


def test_normalisation_and_domain_options() -> None:
    from midog.config import RECIPES

    torch.manual_seed(0)
    logits, deltas = torch.randn(3, 10, 2), torch.randn(3, 10, 4)
    matches = torch.full((3, 10), BACKGROUND)
    matches[0, :2] = 0  # patch 0: 2 positives; patch 1: 6; patch 2: none (labelled)
    matches[1, :6] = 0
    matches[1, 6] = IGNORE
    targets = torch.randn(3, 10, 4)
    dom = torch.randn(3, 4) * 3
    domains, labelled = torch.tensor([0, 1, 2]), torch.tensor([True, True, True])
    ref = total_loss(logits, deltas, dom, matches, targets, domains, labelled)
    # Reference: each patch normalised by its own positives, the empty one not at all.
    per = [patch_losses(logits[i], deltas[i], matches[i], targets[i]).reference for i in range(3)]
    assert torch.isclose(ref.detection, sum(per) / 3)
    ce = torch.nn.functional.cross_entropy(dom, domains)
    assert torch.isclose(ref.domain, 0.25 * (1 - torch.exp(-ce)) ** 2 * ce / 3)
    assert torch.isclose(ref.total, ref.detection + ref.domain)
    imp = total_loss(logits, deltas, dom, matches, targets, domains, labelled, recipe=RECIPES["improved"])
    assert torch.isclose(imp.domain, domain_focal_loss(dom, domains, mode="per_sample"))
    assert torch.isclose(imp.cls_per_patch.sum(), ref.cls_per_patch.sum())  # per-patch values stay reported
    n = 8
    cls = logits.new_zeros(())
    for i in range(3):
        keep = matches[i] != IGNORE
        t = torch.zeros(int(keep.sum()), 2)
        t[:, 0] = (matches[i][keep] >= 0).float()
        cls = cls + focal_loss(logits[i][keep], t)
    box = sum(torch.nn.functional.smooth_l1_loss(deltas[i][matches[i] >= 0], targets[i][matches[i] >= 0], reduction="sum") for i in range(2))
    assert torch.isclose(imp.detection, cls / n + box / (4 * n))


def test_recipe_flags_override_one_field() -> None:
    from midog.config import RECIPES
    from midog.config import make_recipe
    from midog.training.loop import run_config

    ref = run_config("x", "y").objective
    assert ref == RECIPES["reference"] and ref.detach_laterals and ref.detach_focal_weights
    one = run_config("x", "y", detach_laterals=False).objective
    assert not one.detach_laterals and one.domain_focal == "batch_mean" and one.name == "reference+custom"
    assert make_recipe("improved") == RECIPES["improved"]
    with pytest.raises(MidogError, match="recipe"):
        run_config("x", "y", recipe="fancy")
    with pytest.raises(MidogError, match="normalise"):
        make_recipe(normalise="image")


def test_box_kept_only_when_its_centre_is_strictly_inside() -> None:
    boxes = np.array([[-25, 100, 25, 150], [487, 100, 537, 150], [10, 10, 60, 60]], np.float32)  # centres x 0, 512, 35
    kept = boxes_in_patch(boxes, 0, 0, 512)
    assert kept.tolist() == [[10, 10, 60, 60]]


def test_empty_patch_is_front_padded_with_the_dummy_box_and_all_background() -> None:
    from midog.network.anchors import make_anchors
    from midog.training.matching import collate_boxes, unpad

    boxes, labels = collate_boxes([np.array([[10, 10, 60, 60], [100, 100, 150, 150]], np.float32), np.zeros((0, 4))], 512)
    assert labels.tolist() == [[1, 1], [0, 0]]
    assert boxes[1].tolist() == [[0, 0, 0, 0], [-1, -1, -0.99609375, -0.99609375]]
    gt, cls = unpad(boxes[1], labels[1])
    assert len(gt) == 2 and cls.tolist() == [-1, -1]  # the reference keeps every row
    m, _ = build_targets(make_anchors(tile_size=512), [np.zeros((0, 4))], 512)
    assert bool((m == BACKGROUND).all())
    one, _ = collate_boxes([np.array([[10, 10, 60, 60]], np.float32), np.array([[1, 2, 51, 52], [5, 5, 55, 55]], np.float32)], 512)
    assert one[0, 0].tolist() == [0, 0, 0, 0]  # padding goes in front


def test_one_cycle_and_alpha_are_fastai_s() -> None:
    from midog.training.schedule import OneCycle, grl_alpha

    s = OneCycle(100000, OptimConfig(max_lr=1e-4))
    for k, lr, mom in [(0, 4e-6, 0.95), (1000, 4.262949022e-06, 0.9497260948), (30000, 1e-4, 0.85),
                       (50000, 8.117456540e-05, 0.8688255099), (99999, 4.000503549e-10, 0.9499999999)]:
        assert math.isclose(s.lr(k), lr, rel_tol=1e-9) and math.isclose(s.momentum(k), mom, rel_tol=1e-9)
    assert math.isclose(grl_alpha(0, 200), 0.02499479, rel_tol=1e-6)
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], betas=(0.9, 0.99))
    s.apply(opt, 30000)
    assert opt.param_groups[0]["lr"] == 1e-4 and opt.param_groups[0]["betas"] == (0.85, 0.99)


def test_backbone_file_loads_into_the_encoder(tmp_path: Path) -> None:
    import torchvision

    from midog.network.retinanet import RetinaNetDA
    from midog.training.checkpoints import init_backbone

    resnet = torchvision.models.resnet18(weights=None)
    torch.save(resnet.state_dict(), tmp_path / "r18.pth")
    model = RetinaNetDA()
    assert init_backbone(model, str(tmp_path / "r18.pth")) == str(tmp_path / "r18.pth")
    assert torch.equal(model.encoder[5][1].conv2.weight, resnet.layer2[1].conv2.weight)
    torch.save({"conv1.weight": resnet.conv1.weight}, tmp_path / "partial.pth")
    with pytest.raises(MidogError, match="not a ResNet18"):
        init_backbone(model, str(tmp_path / "partial.pth"))


def test_every_config_field_is_an_option_and_comes_back() -> None:
    """The generated CLI: each field of each concern has an option, and a value given there
    lands in that field (so a field added to a dataclass is settable from `midog train`)."""
    import dataclasses
    import typing

    from midog.commands.cli import build_parser
    from midog.config import RunConfig
    from midog.commands.train import config_from_args

    def leaves(cls, path=()):  # noqa: ANN001, ANN202
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if dataclasses.is_dataclass(hints[f.name]):
                yield from leaves(hints[f.name], (*path, f.name))
            elif f.metadata.get("cli", {}).get("enabled", True):
                yield (*path, f.name), f

    checked = 0
    for path, f in leaves(RunConfig):
        spec = f.metadata["cli"]
        if spec["positional"] or spec["const"] is not None or spec["choices"] is not None or f.type == "bool":
            continue
        flag = "--" + (spec["flag"] or f.name.replace("_", "-"))  # parse_args exits if it is not an option
        value = {"int": "7", "float": "0.125", "str": "xyz"}
        hint = str(f.type)
        if "tuple" in hint:
            argv, expected = [flag, "0.125", "0.25"], (0.125, 0.25)
        else:
            key = next(k for k in value if k in hint)
            argv, expected = [flag, value[key]], {"int": 7, "float": 0.125, "str": "xyz"}[key]
        cfg = config_from_args(build_parser().parse_args(["train", "m.json", "-o", "r", *argv]))
        got = cfg
        for name in path:
            got = getattr(got, name)
        assert got == expected, (flag, got)
        checked += 1
    assert checked >= 25


def test_a_runs_iou_thresholds_reach_the_matching() -> None:
    from midog.network.anchors import make_anchors
    from midog.config import make_recipe
    from midog.training.loop import make_batch
    from midog.training.sampler import Patch

    patch = Patch(np.zeros((256, 256, 3), np.uint8), np.array([[100, 100, 150, 150]], np.float32), 0, True)
    anchors = make_anchors(tile_size=256)
    ref = make_batch([patch], anchors, 256)
    loose = make_batch([patch], anchors, 256, recipe=make_recipe(match_fg_iou=0.3, match_bg_iou=0.2))
    assert int((loose.matches >= 0).sum()) > int((ref.matches >= 0).sum()) > 0


def test_resumes_a_last_pt_of_the_previous_layout(tiny_set: Path, tmp_path: Path) -> None:
    from midog.training.loop import train

    out = tmp_path / "run"
    train(_cfg(tiny_set, out, val_every=2, domain_weight=0.5), stop_after=1)
    state = torch.load(out / "last.pt", weights_only=True)
    new = state["fingerprint"]
    # What the code before the per-concern configuration wrote for this run.
    state["fingerprint"] = {
        "data": new["data"], "split": new["split"],
        "recipe": {"name": "reference", "detach_laterals": True, "detach_focal_weights": True,
                   "normalise": "patch", "domain_focal": "batch_mean"},
        "patch_size": 224, "per_scanner": 1, "train_patches": 2, "epochs": 2, "max_lr": 1e-3, "seed": 0,
        "domain_weight": 0.5, "select": "aucpr",
    }
    torch.save(state, out / "last.pt")
    with pytest.raises(MidogError, match="differ"):
        train(_cfg(tiny_set, out, val_every=2, domain_weight=0.5, max_lr=2e-3), resume=True)
    with pytest.raises(MidogError, match="older version"):
        train(_cfg(tiny_set, out, val_every=2, domain_weight=0.5, focal_gamma=1.0), resume=True)
    assert train(_cfg(tiny_set, out, val_every=2, domain_weight=0.5), resume=True)["epochs_done"] == 2
