"""Adaptation without labels (`midog adapt`): the encoder's BatchNorm statistics
re-estimated on tissue tiles of the target scanner's images.

BatchNorm normalises each channel by the running mean and variance of the training
scanners' features. A scanner that is brighter or paler shifts those features; replacing
the statistics by the target images' own (AdaBN, Li et al. 2016) re-centres them without
any label. Only the encoder's BatchNorm buffers change (running mean, variance and the
batch counter); every weight, bias and the heads stay bit-identical. Inference folds the
new statistics into the convolutions, as it does any checkpoint's (`fold_batchnorm`).

Tiles are the detector's own: its tile grid, kept where the thumbnail shows tissue, read
and normalised exactly as `midog detect` does.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from ..errors import MidogError


@dataclass
class Adaptation:
    images: list[str]
    tiles: int
    tiles_per_image: dict[str, int]
    blend: float
    layers: int  # BatchNorm layers re-estimated

    def record(self) -> dict[str, Any]:
        return {"method": "encoder BatchNorm statistics re-estimated on target tissue tiles", "images": self.images,
                "tiles": self.tiles, "tiles_per_image": self.tiles_per_image, "blend": self.blend, "layers": self.layers}


def tissue_tiles(path: str | Path, config: Any, max_tiles: int | None = None, seed: int = 0, mpp: float | None = None) -> list[np.ndarray]:
    """uint8 tiles of one image on the detector's grid, those with tissue (at most
    `max_tiles`, drawn at random with `seed`)."""
    from ..detector.tiles import read_tile, tile_origins
    from ..slides.readers import open_slide
    from ..slides.tissue import tiles_with_tissue, tissue_mask

    with open_slide(path, mpp=mpp) as slide:
        origins = tile_origins(slide.width, slide.height, config)
        thumb, downsample = slide.thumbnail()
        kept = tiles_with_tissue(origins, config.tile_size, tissue_mask(thumb), downsample) or origins
        if max_tiles is not None and len(kept) > max_tiles:
            pick = np.random.default_rng(seed).choice(len(kept), max_tiles, replace=False)
            kept = [kept[i] for i in sorted(pick)]
        return [read_tile(slide, x, y, config) for x, y in kept]


def encoder_batchnorms(model: nn.Module) -> list[nn.BatchNorm2d]:
    return [m for m in model.encoder.modules() if isinstance(m, nn.BatchNorm2d)]


@torch.no_grad()
def reestimate(model: nn.Module, batches: Callable[[], Any], blend: float = 1.0) -> int:
    """Replace the encoder's BatchNorm running statistics by those of the tiles `batches()`
    yields (normalised float batches), averaged over every tile (momentum None: a cumulative
    mean, so the order of tiles does not matter); `blend` < 1 keeps that share of the old
    statistics. Returns the number of layers changed. The model is left in eval mode."""
    bns = encoder_batchnorms(model)
    old = [(bn.running_mean.clone(), bn.running_var.clone()) for bn in bns]
    model.eval()
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None
        bn.train()
    seen = 0
    for batch in batches():
        model.encoder.features(batch)
        seen += len(batch)
    if not seen:
        raise MidogError("no tiles to estimate the BatchNorm statistics on")
    for bn, (mean, var) in zip(bns, old):
        bn.momentum = 0.1
        bn.running_mean.mul_(blend).add_(mean, alpha=1 - blend)
        bn.running_var.mul_(blend).add_(var, alpha=1 - blend)
    model.eval()
    return len(bns)


def adapt(
    weights: str | Path, images: list[Path], out: str | Path, max_tiles_per_image: int = 16, batch_size: int = 4,
    blend: float = 1.0, seed: int = 0, mpp: float | None = None, source_sha256: str | None = None,
) -> Adaptation:
    """Write `out`: `weights` with the encoder's BatchNorm statistics of `images`' tissue tiles."""
    from ..config import REFERENCE, with_normalisation
    from ..detector.tiles import Normalizer
    from ..network.retinanet import load_model, read_state_dict
    from .checkpoints import atomic_save, code_version

    if not 0.0 < blend <= 1.0:
        raise MidogError(f"--blend must lie in (0, 1], got {blend}")
    if not images:
        raise MidogError("no images to adapt to")
    raw, meta = read_state_dict(weights)
    config = with_normalisation(REFERENCE, meta)
    model, _ = load_model(weights, "cpu", config)
    normalize = Normalizer(config, "cpu")
    tiles: list[np.ndarray] = []
    per_image = {}
    for i, path in enumerate(images):
        found = tissue_tiles(path, config, max_tiles_per_image, seed + i, mpp)
        per_image[Path(path).name] = len(found)
        tiles += found

    def batches():
        for k in range(0, len(tiles), batch_size):
            yield normalize(torch.from_numpy(np.stack(tiles[k : k + batch_size])))

    layers = reestimate(model, batches, blend)
    new = model.state_dict()
    changed = {f"encoder.{n}" for n, m in model.encoder.named_modules() if isinstance(m, nn.BatchNorm2d)}
    state = {}
    for key, tensor in raw.items():
        module, _, leaf = key.rpartition(".")
        if module in changed and leaf in ("running_mean", "running_var", "num_batches_tracked"):
            state[key] = new[key].to(tensor.dtype)
        else:
            state[key] = tensor  # untouched, bit for bit (float16 files stay float16)
    result = Adaptation([str(p) for p in images], len(tiles), per_image, blend, layers)
    record = {**result.record(), "source": str(weights), "source_sha256": source_sha256, "code_version": code_version()}
    meta = {**meta, "adaptation": record, "adaptations": list(meta.get("adaptations", [])) + [record]}
    atomic_save({"model": state, "meta": meta}, Path(out))
    return result
