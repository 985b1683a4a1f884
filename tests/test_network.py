"""The network is the reference's, key for key; anchors and box coding follow docs/reference-algorithm.md#anchors-and-box-coding."""

from __future__ import annotations

import pytest
import torch
from conftest import SHARED, need_shared

from midog.network.anchors import make_anchors
from midog.network.box_coding import decode, encode
from midog.errors import MidogError
from midog.network.retinanet import RetinaNetDA, load_model


def reference_keys() -> list[tuple[str, list[int]]]:
    text = need_shared(SHARED / "reference" / "state_dict_keys.txt").read_text()
    rows = [line.split("\t") for line in text.splitlines() if line.strip() and not line.startswith("#")]
    return [(k, [int(s) for s in shape.strip("[]").split(",") if s.strip()]) for k, shape in rows]


def test_state_dict_matches_reference_key_for_key():
    ours = RetinaNetDA().state_dict()
    expected = reference_keys()
    assert len(expected) == 209
    assert [(k, list(v.shape)) for k, v in ours.items()] == expected


def test_outputs_cover_26880_anchors_in_head_order():
    model = RetinaNetDA().eval()
    with torch.no_grad():
        cls, box = model(torch.zeros(2, 3, 512, 512))
    assert cls.shape == (2, 26880, 2) and box.shape == (2, 26880, 4)
    assert make_anchors().shape == (26880, 4)


def test_anchor_geometry():
    anchors = make_anchors()
    # First P3 cell: centre (-1 + 1/64) on both axes, size 4 * 0.2 * 2/64 -> 32 * 0.2 px on a 512 tile.
    assert torch.allclose(anchors[0], torch.tensor([-1 + 1 / 64, -1 + 1 / 64, 0.025, 0.025]))
    assert torch.allclose(anchors[4, 2:] * 256, torch.tensor([32.0, 32.0]))  # scale 1.0 at P3
    p5_first = 5 * (4096 + 1024)
    assert torch.allclose(anchors[p5_first + 4, 2:] * 256, torch.tensor([128.0, 128.0]))
    # Second anchor cell steps along x (columns), rows are y.
    assert anchors[5, 1] > anchors[0, 1] and anchors[5, 0] == anchors[0, 0]


def test_box_coding_round_trip():
    anchors = make_anchors()[:100]
    boxes = anchors.clone()
    boxes[:, :2] += 0.01
    boxes[:, 2:] *= 1.3
    assert torch.allclose(decode(encode(boxes, anchors), anchors), boxes, atol=1e-5)


def test_gradient_reversal_flips_encoder_gradient():
    torch.manual_seed(0)
    model = RetinaNetDA().eval()  # eval: no dropout, so both passes are the same function
    x = torch.rand(2, 3, 256, 256)  # c5 must stay >= 1 px after three unpadded convs
    _, _, domain = model.forward_train(x, alpha=0.5)
    assert domain.shape == (2, 4)
    domain.sum().backward()
    reversed_grad = model.encoder[0].weight.grad.clone()
    model.zero_grad()
    model.d5(model.features(x)[2]).sum().backward()
    plain_grad = model.encoder[0].weight.grad
    assert plain_grad.abs().sum() > 0
    assert torch.allclose(reversed_grad, -0.5 * plain_grad, rtol=1e-4, atol=1e-8)


def test_load_accepts_plain_and_wrapped_state_dicts(tmp_path):
    state = RetinaNetDA().state_dict()
    plain, wrapped, half = tmp_path / "plain.pth", tmp_path / "wrapped.pth", tmp_path / "half.pth"
    torch.save(state, plain)
    torch.save({"model": state, "opt": {"lr": 1}}, wrapped)
    torch.save({"model": {k: v.half() if v.is_floating_point() else v for k, v in state.items()}, "meta": {"threshold": 0.5}}, half)
    for path in (plain, wrapped):
        model, meta = load_model(path)
        assert not model.training and meta == {}
    assert load_model(half)[1]["threshold"] == 0.5


def test_load_mismatch_lists_missing_and_unexpected_keys(tmp_path):
    state = RetinaNetDA().state_dict()
    del state["d5.reducer2.weight"]
    state["extra.weight"] = torch.zeros(1)
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(MidogError) as err:
        load_model(path)
    assert "missing keys: d5.reducer2.weight" in str(err.value) and "unexpected keys: extra.weight" in str(err.value)


def test_load_rejects_non_weights_file(tmp_path):
    path = tmp_path / "x.pth"
    path.write_text("not torch")
    with pytest.raises(MidogError, match="not a PyTorch weights file"):
        load_model(path)


def test_fold_batchnorm_keeps_the_function():
    from midog.network.retinanet import fold_batchnorm

    torch.manual_seed(0)
    model = RetinaNetDA().eval()
    # Trained-looking BatchNorm statistics: with the defaults (mean 0, var 1, identity
    # affine) folding would be a no-op and a wrong fold would go unnoticed.
    for m in model.encoder.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    for head in (model.classifier, model.box_regressor):  # zero at init: constant outputs
        torch.nn.init.normal_(head[3].weight, std=0.01)
    folded = fold_batchnorm(model)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.encoder.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.encoder.modules())  # a copy
    x = torch.rand(2, 3, 256, 256)
    with torch.no_grad():
        ref_cls, ref_box = model(x)
        cls, box = folded(x)
    scale = ref_cls.abs().max().item()
    assert (cls - ref_cls).abs().max().item() <= 1e-5 * max(1.0, scale)
    assert (box - ref_box).abs().max().item() <= 1e-5 * max(1.0, ref_box.abs().max().item())
    # The statistics matter here: an unfolded model without them gives other outputs.
    with torch.no_grad():
        for m in model.encoder.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.reset_running_stats()
        cls_plain, box_plain = model(x)
    assert (cls_plain - ref_cls).abs().max().item() > 1e-3 and (box_plain - ref_box).abs().max().item() > 1e-3


def test_classifier_prior_is_the_references_bias():
    from midog.config import REFERENCE
    from midog.network.retinanet import prior_bias

    assert prior_bias(REFERENCE.prior_probability) == -4.0  # exactly, in float64
    model = RetinaNetDA()
    assert torch.equal(model.classifier[-1].bias, torch.full_like(model.classifier[-1].bias, -4.0))
    assert torch.equal(model.box_regressor[-1].bias, torch.zeros_like(model.box_regressor[-1].bias))
    with torch.no_grad():
        cls, _ = model.eval()(torch.rand(1, 3, 256, 256))
    assert torch.allclose(torch.sigmoid(cls), torch.tensor(REFERENCE.prior_probability))


def test_encoder_is_a_constructor_argument():
    import torchvision

    from midog.network.retinanet import ResNetEncoder

    # A wider torchvision ResNet: the FPN and discriminators take its channel counts.
    wide = ResNetEncoder(torchvision.models.resnet50(weights=None))
    assert wide.out_channels == (512, 1024, 2048)
    model = RetinaNetDA(encoder=wide).eval()
    assert model.c5top5.in_channels == 2048 and model.merges[1].conv_lat.in_channels == 512
    with torch.no_grad():
        cls, box = model(torch.zeros(1, 3, 256, 256))
    assert cls.shape == (1, 6720, 2) and box.shape == (1, 6720, 4)

    # The default encoder's stride 8/16/32 maps are layer2-4 of torchvision's ResNet18.
    resnet = torchvision.models.resnet18(weights=None).eval()
    enc = ResNetEncoder(resnet).eval()
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        c2 = resnet.layer1(resnet.maxpool(resnet.relu(resnet.bn1(resnet.conv1(x)))))
        c3 = resnet.layer2(c2)
        c4 = resnet.layer3(c3)
        c5 = resnet.layer4(c4)
        ours = enc.features(x)
        assert all(torch.equal(a, b) for a, b in zip(ours, (c3, c4, c5)))
        assert torch.equal(enc(x), c5)  # called, the stride-32 map (the UMAP features use it)

    # ImageNet-style torchvision weights load by name into the numbered modules.
    other = torchvision.models.resnet18(weights=None)
    fresh = ResNetEncoder()
    assert fresh.load_torchvision(other.state_dict()) == []
    assert torch.equal(fresh[fresh.index("layer3")][0].conv1.weight, other.layer3[0].conv1.weight)
