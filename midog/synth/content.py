"""One image's content, independent of any scanner: tissue, lumina, stroma, normal
nuclei and the labelled objects (mitotic figures and look-alikes), as stain OD maps."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .cells import (
    _SPECIAL_RADIUS,
    _Canvas,
    _fine_texture,
    _lookalike_patch,
    _mitosis_patch,
    _sigmoid,
    _smooth_field,
    _stamp_nuclei,
)

CATEGORY_MITOSIS = 1
CATEGORY_HARD_NEGATIVE = 2
# The real MIDOG.json's names, so that code written against it works unchanged.
CATEGORIES = [
    {"id": CATEGORY_MITOSIS, "name": "mitotic figure"},
    {"id": CATEGORY_HARD_NEGATIVE, "name": "not mitotic figure"},
]
BOX_SIZE = 50  # every MIDOG box is 50 x 50 px centred on the cell
# Object centres stay this far from the border: the whole 50 px box lies inside the
# image and a detector tile never sees a figure cut in half by the image edge.
BORDER_MARGIN = 40
# Centres of labelled objects are at least this far apart: 50 px boxes cannot overlap
# (50 * sqrt(2) < 72) and a figure never sits inside another's halo.
MIN_OBJECT_DISTANCE = 72
REFERENCE_AREA = 1024 * 1024  # object counts are specified per 1024 x 1024 image


@dataclass(frozen=True)
class SynthObject:
    """One labelled cell: integer pixel centre and MIDOG category."""

    category_id: int
    x: int
    y: int

    @property
    def bbox(self) -> list[int]:
        half = BOX_SIZE // 2
        return [self.x - half, self.y - half, self.x + half, self.y + half]


def _place_special(
    rng: np.random.Generator,
    tissue: np.ndarray,
    n_mitoses: int,
    n_lookalikes: int,
) -> list[SynthObject]:
    """Rejection-sample well separated centres inside tissue, away from the border."""
    height, width = tissue.shape
    wanted = [CATEGORY_MITOSIS] * n_mitoses + [CATEGORY_HARD_NEGATIVE] * n_lookalikes
    # Interleave so that, if space runs out, both categories lose objects alike.
    order = rng.permutation(len(wanted))
    objects: list[SynthObject] = []
    pts = np.zeros((0, 2), dtype=np.float64)
    for idx in order:
        for _ in range(200):
            x = int(rng.integers(BORDER_MARGIN, width - BORDER_MARGIN))
            y = int(rng.integers(BORDER_MARGIN, height - BORDER_MARGIN))
            if tissue[y, x] < 0.95:
                continue
            if len(pts) and np.min(np.hypot(pts[:, 0] - x, pts[:, 1] - y)) < MIN_OBJECT_DISTANCE:
                continue
            objects.append(SynthObject(wanted[idx], x, y))
            pts = np.vstack([pts, [x, y]])
            break
    return objects


def render_content(
    rng: np.random.Generator, width: int, height: int
) -> tuple[np.ndarray, np.ndarray, list[SynthObject]]:
    """Draw one image's tissue as stain optical density, independent of any scanner.

    Returns (hematoxylin OD, eosin OD, labelled objects); both maps are (height, width)
    float32. Counts of mitoses and look-alikes are 5-15 each per 1024 x 1024 px.
    """
    from scipy.ndimage import gaussian_filter

    area = width * height / REFERENCE_AREA
    # Glass: lumina and gaps between tissue fragments, about 5-20 % of the image.
    lumen = _smooth_field(rng, height, width, 110.0) + 0.5 * _smooth_field(rng, height, width, 35.0)
    level = float(np.quantile(lumen, 1.0 - rng.uniform(0.05, 0.2)))
    tissue = _sigmoid(level - lumen, 40.0)  # edges of a few px, like cut tissue
    # Cellularity: sheets of tumour cells (dense nuclei) versus collagen-rich stroma.
    cell = _smooth_field(rng, height, width, 140.0) + 0.3
    stroma_w = _sigmoid(-cell, 3.0)
    # Collagen fibres: noise stretched along one direction, two directions blended by a
    # smooth field so that fibre orientation wanders across the image.
    noise = rng.standard_normal((height, width), dtype=np.float32)
    fib_h = gaussian_filter(noise, (1.5, 6.0), truncate=3.0)
    fib_v = gaussian_filter(noise, (6.0, 1.5), truncate=3.0)
    orient = _sigmoid(_smooth_field(rng, height, width, 200.0), 2.0)
    fibres = orient * fib_h / max(float(fib_h.std()), 1e-6) + (1 - orient) * fib_v / max(float(fib_v.std()), 1e-6)
    mottle = _smooth_field(rng, height, width, 20.0)

    eos = 0.30 + 0.04 * mottle + stroma_w * (0.14 + 0.045 * fibres)
    eos = np.clip(eos, 0.05, None) * tissue
    hem_bg = (0.035 + 0.01 * mottle) * tissue

    n_mit = max(1, int(round(int(rng.integers(5, 16)) * area)))
    n_neg = max(1, int(round(int(rng.integers(5, 16)) * area)))
    objects = _place_special(rng, tissue, n_mit, n_neg)

    pad = _SPECIAL_RADIUS
    nuc = _Canvas(height, width, pad)
    special = _Canvas(height, width, pad)
    special_smooth = _Canvas(height, width, pad)
    eos_log = _Canvas(height, width, pad)

    # Normal nuclei on a jittered grid: dense without piling up, and vectorised.
    step = 17.0
    gy, gx = np.mgrid[step / 2 : height : step, step / 2 : width : step]
    gx = (gx + rng.uniform(-0.4, 0.4, gx.shape) * step).ravel()
    gy = (gy + rng.uniform(-0.4, 0.4, gy.shape) * step).ravel()
    xi = np.clip(np.round(gx).astype(int), 0, width - 1)
    yi = np.clip(np.round(gy).astype(int), 0, height - 1)
    sw = stroma_w[yi, xi]
    keep_p = tissue[yi, xi] ** 4 * (0.75 * (1 - sw) + 0.15 * sw)
    keep = rng.uniform(0.0, 1.0, len(xi)) < keep_p
    if objects:
        pts = np.array([[o.x, o.y] for o in objects], dtype=np.float64)
        near = np.min(np.hypot(xi[:, None] - pts[None, :, 0], yi[:, None] - pts[None, :, 1]), axis=1)
        keep &= near > 19.0  # the labelled cell stands alone, as annotators saw it
    xi, yi, sw = xi[keep], yi[keep], sw[keep]
    stromal = rng.uniform(0.0, 1.0, len(xi)) < sw
    fibre_angle = np.where(orient[yi, xi] > 0.5, 0.0, math.pi / 2)
    _stamp_nuclei(rng, nuc, eos_log, xi, yi, stromal, fibre_angle)

    for obj in objects:
        if obj.category_id == CATEGORY_MITOSIS:
            h, e = _mitosis_patch(rng)
            special.window(obj.x, obj.y, pad)[...] += h
        else:
            h, e = _lookalike_patch(rng)
            special_smooth.window(obj.x, obj.y, pad)[...] += h
        eos_log.window(obj.x, obj.y, pad)[...] += np.log(e)

    # Chromatin texture: coarse and strong in interphase nuclei, mild in condensed
    # chromosomes, almost none in the smooth look-alikes.
    tex = _fine_texture(rng, height, width, 1.1)
    hem = (
        hem_bg
        + nuc.crop() * np.clip(1.0 + 0.35 * tex, 0.3, None)
        + special.crop() * np.clip(1.0 + 0.12 * tex, 0.5, None)
        + special_smooth.crop() * (1.0 + 0.04 * tex)
    )
    eos = eos * np.exp(eos_log.crop())
    return hem.astype(np.float32), eos.astype(np.float32), objects
