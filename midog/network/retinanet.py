"""The domain-adversarial RetinaNet of the MIDOG 2021 reference (docs/reference-algorithm.md#network).

Module names and registration order mirror the reference exactly, so `state_dict()`
matches `RetinaNetDA.pth` key for key and a strict load works.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from ..config import REFERENCE, DetectorConfig
from ..errors import MidogError


class GradientReversal(torch.autograd.Function):
    """Identity forward, gradient times -alpha backward: the encoder learns to fool the
    domain classifier while the classifier learns to tell scanners apart."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, alpha: float) -> torch.Tensor:
        ctx.alpha = alpha
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return -ctx.alpha * grad, None


def grad_reverse(x: torch.Tensor, alpha: float) -> torch.Tensor:
    return GradientReversal.apply(x, alpha)


class DomainClassifier(nn.Module):
    """3 x (unpadded 3x3 conv, BN, ReLU, Dropout), global average pool, linear to domains;
    the convs keep, halve and halve again the channels."""

    def __init__(self, in_channels: int, n_domains: int = REFERENCE.n_domains, dropout: float = REFERENCE.domain_dropout,
                 init_std: float = REFERENCE.domain_init_std) -> None:
        super().__init__()
        chs = [in_channels, in_channels, in_channels // 2, in_channels // 4]
        layers: list[nn.Module] = []
        for c_in, c_out in zip(chs[:-1], chs[1:]):
            conv = nn.Conv2d(c_in, c_out, 3, padding=0, bias=False)
            nn.init.normal_(conv.weight, 0.0, init_std)
            layers += [conv, nn.BatchNorm2d(c_out), nn.ReLU(inplace=True), nn.Dropout(dropout)]
        self.reducer = nn.Sequential(*layers)
        self.reducer2 = nn.Linear(chs[-1], n_domains, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.adaptive_avg_pool2d(self.reducer(x), 1).flatten(1)
        return self.reducer2(x)


class ResNetEncoder(nn.Sequential):
    """A torchvision ResNet's body as the reference cut it (fastai's `create_body`): the
    first eight children, numbered 0 (conv1) to 7 (layer4), so the state_dict reads
    `encoder.4.0.conv1.weight`. Called, it returns the stride-32 map; `features` returns
    the stride 8, 16 and 32 maps (layer2-4) that feed the FPN, and `out_channels` their
    channel counts. Any encoder with `features` and `out_channels` can replace it."""

    # torchvision's names of the kept children, in order: a name's position is its index.
    CHILDREN = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")
    FEATURE_LAYERS = ("layer2", "layer3", "layer4")  # strides 8, 16, 32: C3, C4, C5
    RESIDUAL_LAYERS = ("layer1", "layer2", "layer3", "layer4")

    def __init__(self, resnet: nn.Module | None = None) -> None:
        resnet = torchvision.models.resnet18(weights=None) if resnet is None else resnet
        super().__init__(*(getattr(resnet, name) for name in self.CHILDREN))
        # A residual stage's width is that of its last BatchNorm (BasicBlock and Bottleneck alike).
        self.out_channels = tuple(
            [m for m in getattr(resnet, name).modules() if isinstance(m, nn.BatchNorm2d)][-1].num_features
            for name in self.FEATURE_LAYERS
        )

    def index(self, name: str) -> int:
        return self.CHILDREN.index(name)

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Encoder outputs at strides 8, 16, 32 (layer2, layer3, layer4)."""
        wanted = {self.index(name) for name in self.FEATURE_LAYERS}
        out = []
        for i, module in enumerate(self):
            x = module(x)
            if i in wanted:
                out.append(x)
            if len(out) == len(wanted):
                break
        return tuple(out)

    def load_torchvision(self, state: dict[str, torch.Tensor]) -> list[str]:
        """Load a torchvision ResNet state_dict (its `fc` is ignored); returns missing keys."""
        renames = {f"{name}.": f"{i}." for i, name in enumerate(self.CHILDREN)}
        mapped = {}
        for k, v in state.items():
            for old, new in renames.items():
                if k.startswith(old):
                    mapped[new + k[len(old):]] = v
        return self.load_state_dict(mapped, strict=False).missing_keys


class LateralMerge(nn.Module):
    """Top-down FPN step: 1x1 lateral conv of an encoder feature plus the upsampled coarser level."""

    def __init__(self, channels: int, lateral_channels: int) -> None:
        super().__init__()
        self.conv_lat = nn.Conv2d(lateral_channels, channels, 1)

    def forward(self, top: torch.Tensor, lateral: torch.Tensor) -> torch.Tensor:
        return self.conv_lat(lateral) + F.interpolate(top, size=lateral.shape[-2:], mode="nearest")


def _head(out_per_anchor: int, n_anchors: int, chs: int, n_convs: int, final_bias: float) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Sequential(nn.Conv2d(chs, chs, 3, padding=1), nn.ReLU()) for _ in range(n_convs)]
    final = nn.Conv2d(chs, out_per_anchor * n_anchors, 3, padding=1)
    # As in the reference: the head starts from a constant prior, so early training is stable.
    nn.init.zeros_(final.weight)
    nn.init.constant_(final.bias, final_bias)
    return nn.Sequential(*layers, final)


def prior_bias(probability: float) -> float:
    """The logit that makes a sigmoid output `probability`: log(p / (1 - p))."""
    return math.log(probability / (1 - probability))


class RetinaNetDA(nn.Module):
    """An encoder (the reference's ResNet18 body by default), a 128-channel FPN (P3-P5 used),
    shared heads and a scanner discriminator on the stride-32 map."""

    def __init__(
        self, config: DetectorConfig = REFERENCE, detach_laterals: bool = False, encoder: nn.Module | None = None
    ) -> None:
        """`encoder`: any module with `features(x)` -> (C3, C4, C5) at strides 8, 16, 32 and
        `out_channels`, their channel counts (default: the reference's ResNet18 body)."""
        super().__init__()
        self.n_classes = config.n_classes
        # The reference's fastai hooks store detached encoder outputs, so no detection gradient
        # flows through the lateral connections. Off by default: gradient through them is the
        # textbook FPN; training can turn it on to reproduce the reference exactly.
        self.detach_laterals = detach_laterals
        self.encoder = ResNetEncoder() if encoder is None else encoder
        c3_chs, c4_chs, c5_chs = self.encoder.out_channels
        chs = config.fpn_channels
        self.c5top5 = nn.Conv2d(c5_chs, chs, 1)
        # P6 and P7 (stride 64, 128) are built and run in training as in the reference, but unused.
        self.c5top6 = nn.Conv2d(c5_chs, chs, 3, stride=2, padding=1)
        self.p6top7 = nn.Sequential(nn.ReLU(), nn.Conv2d(chs, chs, 3, stride=2, padding=1))
        self.merges = nn.ModuleList([LateralMerge(chs, c4_chs), LateralMerge(chs, c3_chs)])
        self.smoothers = nn.ModuleList([nn.Conv2d(chs, chs, 3, padding=1) for _ in range(3)])  # P3, P4, P5
        n_anchors = config.n_anchors
        self.classifier = _head(config.n_classes, n_anchors, chs, config.n_head_convs, prior_bias(config.prior_probability))
        self.box_regressor = _head(4, n_anchors, chs, config.n_head_convs, 0.0)  # deltas 0: the anchors as they are
        # d3 and d4 are never called; the reference builds them, so its weights file holds them.
        domain = dict(n_domains=config.n_domains, dropout=config.domain_dropout, init_std=config.domain_init_std)
        self.d3 = DomainClassifier(c3_chs, **domain)
        self.d4 = DomainClassifier(c4_chs, **domain)
        self.d5 = DomainClassifier(c5_chs, **domain)

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Encoder outputs at strides 8, 16, 32."""
        return self.encoder.features(x)

    def fpn(self, c3: torch.Tensor, c4: torch.Tensor, c5: torch.Tensor) -> list[torch.Tensor]:
        if self.detach_laterals:
            c3, c4 = c3.detach(), c4.detach()
        p5 = self.c5top5(c5)
        if self.training:
            # P6/P7 feed nothing; computing them only matters for parity of training graphs.
            self.p6top7(self.c5top6(c5))
        p4 = self.merges[0](p5, c4)
        p3 = self.merges[1](p4, c3)
        return [smooth(p) for smooth, p in zip(self.smoothers, (p3, p4, p5))]

    def _apply_head(self, head: nn.Module, levels: list[torch.Tensor], n_out: int) -> torch.Tensor:
        # (B, A*C, H, W) -> (B, H*W*A, C): anchor order level, row, column, anchor.
        return torch.cat([head(p).permute(0, 2, 3, 1).reshape(p.shape[0], -1, n_out) for p in levels], 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Class logits (B, N, n_classes) and box deltas (B, N, 4) for N anchors."""
        c3, c4, c5 = self.features(x)
        levels = self.fpn(c3, c4, c5)
        return self._apply_head(self.classifier, levels, self.n_classes), self._apply_head(self.box_regressor, levels, 4)

    def forward_train(self, x: torch.Tensor, alpha: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Detection outputs plus scanner logits through the gradient reversal layer."""
        c3, c4, c5 = self.features(x)
        levels = self.fpn(c3, c4, c5)
        domain = self.d5(grad_reverse(c5, alpha))
        return (
            self._apply_head(self.classifier, levels, self.n_classes),
            self._apply_head(self.box_regressor, levels, 4),
            domain,
        )


def read_state_dict(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """A weights file's state_dict and metadata; accepts a plain state_dict (the published
    `RetinaNetDA.pth`), the reference's training checkpoints `{'model': sd, 'opt': ...}` and
    ours `{'model': sd, 'meta': {...}}`. CUDA-saved files load on the CPU."""
    path = Path(path)
    if not path.is_file():
        raise MidogError(f"{path}: weights file not found")
    obj = _load(path)
    meta: dict[str, Any] = {}
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        meta = dict(obj.get("meta") or {})
        obj = obj["model"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise MidogError(f"{path}: does not hold a state_dict")
    return obj, meta


def _load(path: Path, mmap: bool = False) -> Any:
    """torch.load of tensors only (never code); a file that is not one is one line. torch's
    own message is not passed on: it is pages long and suggests weights_only=False, which
    would run whatever code a hostile file holds."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as exc:  # torch raises many types for a bad file
        if mmap and "mmap" in str(exc):  # the legacy (pre-zip) format cannot be mapped
            return _load(path)
        raise MidogError(f"{path}: not a PyTorch weights file") from None


def read_metadata(path: str | Path) -> dict[str, Any]:
    """A weights file's metadata (`{'model': sd, 'meta': {...}}`; {} for a plain state_dict),
    without reading its tensors (memory-mapped): settling a run's operating point costs nothing."""
    path = Path(path)
    if not path.is_file():
        raise MidogError(f"{path}: weights file not found")
    obj = _load(path, mmap=True)
    meta = obj.get("meta") if isinstance(obj, dict) and isinstance(obj.get("model"), dict) else None
    return dict(meta or {})


def load_model(
    path: str | Path, device: str | torch.device = "cpu", config: DetectorConfig = REFERENCE
) -> tuple[RetinaNetDA, dict[str, Any]]:
    """Build the network, load weights strictly and return it in eval mode with its metadata."""
    state, meta = read_state_dict(path)
    # float16 demo checkpoints are widened: inference runs in float32 for parity.
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    model = RetinaNetDA(config)
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or unexpected or wrong:
        parts = []
        for label, keys in (("missing keys", missing), ("unexpected keys", unexpected), ("wrong shapes", wrong)):
            if keys:
                shown = ", ".join(keys[:8]) + (f", ... ({len(keys)} in all)" if len(keys) > 8 else "")
                parts.append(f"{label}: {shown}")
        raise MidogError(f"{path}: not RetinaNetDA weights; " + "; ".join(parts))
    model.load_state_dict(state, strict=True)
    return model.to(device).eval(), meta



def fold_batchnorm(model: RetinaNetDA) -> RetinaNetDA:
    """Inference copy with every encoder BatchNorm folded into the conv before it: one pass
    over memory fewer per layer, same function up to float rounding. The result's
    state_dict no longer matches the reference, so use it for inference only."""
    import copy

    from torch.nn.utils.fusion import fuse_conv_bn_eval

    model = copy.deepcopy(model).eval()
    enc = model.encoder
    if not isinstance(enc, ResNetEncoder):
        raise TypeError(f"fold_batchnorm folds a ResNetEncoder, not a {type(enc).__name__}")
    conv1, bn1 = enc.index("conv1"), enc.index("bn1")
    enc[conv1], enc[bn1] = fuse_conv_bn_eval(enc[conv1], enc[bn1]), nn.Identity()
    for layer in (enc[enc.index(name)] for name in enc.RESIDUAL_LAYERS):
        for block in layer:
            for i in (1, 2, 3):  # BasicBlock has conv1/bn1 and conv2/bn2, Bottleneck also a third pair
                if hasattr(block, f"bn{i}"):
                    conv, bn = getattr(block, f"conv{i}"), getattr(block, f"bn{i}")
                    setattr(block, f"conv{i}", fuse_conv_bn_eval(conv, bn))
                    setattr(block, f"bn{i}", nn.Identity())
            if block.downsample is not None:
                block.downsample = nn.Sequential(fuse_conv_bn_eval(block.downsample[0], block.downsample[1]))
    return model
