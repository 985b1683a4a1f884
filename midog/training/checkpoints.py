"""Weights in and out of a training run: the encoder's ImageNet start, checkpoints written
atomically, the exported inference weights, and the code version recorded with them."""

from __future__ import annotations

import subprocess
import warnings
from pathlib import Path
from typing import Any

import torch

from ..atomic import atomic_path
from ..errors import MidogError


def code_version() -> str:
    from .. import __version__

    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        rev = ""
    return f"{__version__}+{rev}" if rev else __version__


def atomic_save(obj: Any, path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def init_backbone(model: torch.nn.Module, spec: str) -> str:
    """Load ImageNet ResNet18 weights into the encoder; returns what was used."""
    if spec == "none":
        return "random"
    try:
        if spec == "imagenet":
            import torchvision

            state = torchvision.models.resnet18(weights=torchvision.models.ResNet18_Weights.IMAGENET1K_V1).state_dict()
        else:
            state = torch.load(spec, map_location="cpu", weights_only=True)
    except Exception as exc:  # offline, missing file, bad file: all end in random init
        warnings.warn(
            f"ImageNet backbone weights unavailable ({type(exc).__name__}: {exc}); "
            "training from RANDOM initialisation, which needs far more data and epochs",
            stacklevel=2,
        )
        return "random (ImageNet weights unavailable)"
    missing = model.encoder.load_torchvision(state)
    if missing:
        raise MidogError(f"{spec}: not a ResNet18 state_dict (missing {missing[:4]})")
    return spec


def init_from(model: torch.nn.Module, path: str) -> str:
    """Load detector weights (a `midog train` checkpoint, an exported or calibrated file, or
    the published state_dict) into `model` strictly, to fine-tune them; returns what was used."""
    from ..network.retinanet import read_state_dict

    state, _ = read_state_dict(path)
    expected = model.state_dict()
    wrong = sorted(set(expected) ^ set(state)) + [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if wrong:
        raise MidogError(f"{path}: not RetinaNetDA weights to fine-tune ({', '.join(wrong[:4])} differ)")
    # float16 files are widened: training runs in float32.
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()}, strict=True)
    return f"init {path}"


def export_weights(src: str | Path, dst: str | Path, half: bool = True) -> Path:
    """An inference file from a checkpoint: the full state_dict (float16 when `half`) and
    the metadata, nothing else; `load_model` widens float16 back to float32."""
    from ..network.retinanet import read_state_dict

    state, meta = read_state_dict(src)
    if half:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    atomic_save({"model": state, "meta": meta}, dst)
    return dst
