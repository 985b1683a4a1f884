"""Synthetic multi-scanner data in exactly the MIDOG 2021 layout.

Tests, the demo and training benchmarks need MIDOG-shaped data without the 200 real
slides (licence, 30 GB). `make_dataset` writes `001.tiff`... plus `MIDOG.json` in the
real file's format, for four synthetic "scanners" that see statistically identical
tissue but render it with different stain colours, tone, blur and noise, so the domain
shift is one of colour and image quality, as between the real scanners.

Each image is drawn in two steps:

1. Content, scanner-independent: per-pixel optical density (OD) of hematoxylin and
   eosin. Tissue with lumina, nuclei, mitotic figures (category 1) and look-alikes
   (category 2).
2. Acquisition: the scanner's stain vectors turn OD into RGB (Beer-Lambert), then
   optical blur, tone curve and sensor noise.

The last scanner plays the part of the Leica GT450 in MIDOG 2021: its images are in
`MIDOG.json` but its annotations are not; they go to `unlabeled_annotations.json` so
that the domain shift can still be measured.

Same arguments give byte-identical files: every random draw comes from a
`numpy.random.SeedSequence` keyed by (seed, scanner index, image index).
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

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
class ScannerProfile:
    """How one synthetic scanner turns stain optical density into RGB."""

    name: str
    # Written to the TIFF tags as an integer so that the spacing SimpleITK derives
    # (25.4 / res for inch, 10 / res for cm) is exactly `spacing_mm` below.
    resolution: int
    resolution_unit: str  # "INCH" or "CENTIMETER"
    hematoxylin: tuple[float, float, float]  # RGB OD of unit stain, normalised on use
    eosin: tuple[float, float, float]
    stain_scale: tuple[float, float]  # (H, E) staining intensity multipliers
    white: tuple[float, float, float]  # RGB of glass (no tissue)
    gamma: float
    contrast: float  # around mid-grey
    brightness: float  # added after contrast, in 8-bit levels
    blur_sigma: float  # px, optics
    noise_sigma: float  # 8-bit levels, sensor

    @property
    def spacing_mm(self) -> float:
        per_unit_mm = 25.4 if self.resolution_unit == "INCH" else 10.0
        return per_unit_mm / self.resolution

    @property
    def spacing_um(self) -> float:
        return self.spacing_mm * 1000.0


# Fixed on purpose (not drawn from the seed): a scanner is a stable device, and tests
# and benchmarks can rely on the same four colour domains for every seed.
SCANNERS: tuple[ScannerProfile, ...] = (
    # A: Ruifrok-Johnston hematoxylin; eosin absorbing more blue than red, so that
    # stroma is pink rather than magenta. 0.2274 um/px, the reference's own test image
    # (XResolution 111676 px/inch).
    ScannerProfile(
        name="synthetic scanner A",
        resolution=111676,
        resolution_unit="INCH",
        hematoxylin=(0.650, 0.704, 0.286),
        eosin=(0.100, 0.890, 0.400),
        stain_scale=(1.0, 1.0),
        white=(243.0, 241.0, 246.0),
        gamma=1.0,
        contrast=1.0,
        brightness=0.0,
        blur_sigma=0.6,
        noise_sigma=1.5,
    ),
    # B: magenta hematoxylin and eosin, brighter and slightly softer.
    ScannerProfile(
        name="synthetic scanner B",
        resolution=40000,
        resolution_unit="CENTIMETER",
        hematoxylin=(0.540, 0.780, 0.320),
        eosin=(0.050, 0.920, 0.280),
        stain_scale=(0.9, 1.1),
        white=(248.0, 245.0, 248.0),
        gamma=0.95,
        contrast=1.05,
        brightness=3.0,
        blur_sigma=0.8,
        noise_sigma=2.0,
    ),
    # C: dark, saturated and sharp, with more noise.
    ScannerProfile(
        name="synthetic scanner C",
        resolution=105833,
        resolution_unit="INCH",
        hematoxylin=(0.700, 0.680, 0.230),
        eosin=(0.160, 0.950, 0.300),
        stain_scale=(1.1, 1.2),
        white=(238.0, 236.0, 242.0),
        gamma=1.08,
        contrast=1.1,
        brightness=-6.0,
        blur_sigma=0.4,
        noise_sigma=2.5,
    ),
    # D (unlabeled, the GT450's role): pale, blue-grey hematoxylin, orange eosin,
    # warm white point, low contrast and the most blur: the largest shift from A-C.
    ScannerProfile(
        name="synthetic scanner D",
        resolution=41152,
        resolution_unit="CENTIMETER",
        hematoxylin=(0.720, 0.620, 0.380),
        eosin=(0.020, 0.720, 0.660),
        stain_scale=(0.85, 0.8),
        white=(250.0, 247.0, 240.0),
        gamma=0.92,
        contrast=0.88,
        brightness=5.0,
        blur_sigma=1.1,
        noise_sigma=3.0,
    ),
)
UNLABELED_SCANNER = SCANNERS[-1].name

INFO = {
    "description": "Synthetic MIDOG-style multi-scanner data set (midog synth)",
    "version": "1.0",
    "year": 2021,
    "contributor": "midog.synth",
    "date_created": "2021/04/01",  # fixed: a date from the clock would break byte-identity
}
LICENSES = [{"url": "https://opensource.org/licenses/MIT", "id": 1, "name": "MIT"}]


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


# ---------------------------------------------------------------------------
# Content: stain optical density
# ---------------------------------------------------------------------------


def _sigmoid(x: np.ndarray, k: float) -> np.ndarray:
    # tanh form: no overflow warnings for large |x| and float32 in, float32 out.
    return (0.5 + 0.5 * np.tanh(0.5 * k * x)).astype(np.float32, copy=False)


def _smooth_field(rng: np.random.Generator, height: int, width: int, scale: float) -> np.ndarray:
    """Zero-mean, unit-std random field varying over about `scale` px.

    Built as coarse noise times separable Gaussian interpolation matrices: two small
    matrix products instead of a wide Gaussian filter over the full image (10x faster).
    """
    gh = int(math.ceil(height / scale)) + 3
    gw = int(math.ceil(width / scale)) + 3
    coarse = rng.standard_normal((gh, gw)).astype(np.float32)

    def interp(n: int, g: int) -> np.ndarray:
        pos = (np.arange(n, dtype=np.float32) + 0.5) / scale + 1.0
        w = np.exp(-0.5 * ((pos[:, None] - np.arange(g, dtype=np.float32)[None, :]) / 0.8) ** 2)
        return (w / w.sum(axis=1, keepdims=True)).astype(np.float32)

    field = interp(height, gh) @ coarse @ interp(width, gw).T
    field -= field.mean()
    std = float(field.std())
    return field / std if std > 0 else field


def _fine_texture(rng: np.random.Generator, height: int, width: int, sigma: float) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    tex = gaussian_filter(rng.standard_normal((height, width), dtype=np.float32), sigma)
    return tex / max(float(tex.std()), 1e-6)


class _Canvas:
    """A full-image float map padded by the stamp radius, so stamps never need clipping."""

    def __init__(self, height: int, width: int, pad: int, fill: float = 0.0) -> None:
        self.pad = pad
        self.data = np.full((height + 2 * pad, width + 2 * pad), fill, dtype=np.float32)
        self.height, self.width = height, width

    def window(self, x: int, y: int, radius: int) -> np.ndarray:
        p = self.pad
        return self.data[y + p - radius : y + p + radius + 1, x + p - radius : x + p + radius + 1]

    def crop(self) -> np.ndarray:
        p = self.pad
        return self.data[p : p + self.height, p : p + self.width]


def _local_grid(radius: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[-radius : radius + 1, -radius : radius + 1].astype(np.float32)
    return xx, yy


def _rods(
    xx: np.ndarray,
    yy: np.ndarray,
    cx: np.ndarray,
    cy: np.ndarray,
    half_len: np.ndarray,
    half_width: np.ndarray,
    angle: np.ndarray,
) -> np.ndarray:
    """Sum of K elongated Gaussian blobs (chromosomes), broadcast over the patch."""
    c = np.cos(angle)[:, None, None].astype(np.float32)
    s = np.sin(angle)[:, None, None].astype(np.float32)
    dx = xx[None] - cx[:, None, None]
    dy = yy[None] - cy[:, None, None]
    u = (dx * c + dy * s) / half_len[:, None, None]
    v = (-dx * s + dy * c) / half_width[:, None, None]
    # exp(-(r^4)) has a flatter top and sharper edge than a Gaussian: chromosome-like.
    r2 = u * u + v * v
    return np.exp(-(r2 * r2)).sum(axis=0).astype(np.float32)


def _ellipse_distance(
    xx: np.ndarray, yy: np.ndarray, a: float, b: float, theta: float
) -> np.ndarray:
    c, s = math.cos(theta), math.sin(theta)
    u = (xx * c + yy * s) / a
    v = (-xx * s + yy * c) / b
    return np.sqrt(u * u + v * v)


_SPECIAL_RADIUS = 24  # patch half-size for mitoses and look-alikes: 49 x 49 px


def _mitosis_patch(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Hematoxylin OD and eosin factor of one mitotic figure, centred in the patch.

    Four appearances of condensed chromatin, all irregular and dark: a metaphase plate
    seen side-on (ragged bar), a prometaphase clump of short rods, an end-on metaphase
    ring, and anaphase (two parallel plates).
    """
    xx, yy = _local_grid(_SPECIAL_RADIUS)
    kind = rng.choice(4, p=[0.4, 0.3, 0.1, 0.2])
    theta = rng.uniform(0.0, math.pi)
    c, s = math.cos(theta), math.sin(theta)
    u = xx * c + yy * s
    v = -xx * s + yy * c

    def plate(half_len: float, half_thick: float, offset: float, bow: float) -> np.ndarray:
        # Chromosomes stick out unevenly, so the plate's thickness wobbles along it.
        k = rng.uniform(0.6, 1.5, 3)
        ph = rng.uniform(0.0, 2 * math.pi, 3)
        amp = rng.uniform(0.15, 0.35, 3)
        wob = sum(float(amp[i]) * np.sin(float(k[i]) * u + float(ph[i])) for i in range(3))
        vv = v - offset - bow * u * u
        body = _sigmoid(half_len - np.abs(u), 1.2) * _sigmoid(half_thick * (1 + wob) - np.abs(vv), 1.6)
        # Chromosome arms poking out of both faces of the plate.
        n = int(rng.integers(4, 9))
        uu = rng.uniform(-half_len, half_len, n).astype(np.float32)
        side = rng.choice([-1.0, 1.0], n).astype(np.float32)
        arm_len = rng.uniform(1.5, 3.0, n).astype(np.float32)
        off = side * (half_thick + 0.7 * arm_len)
        ax = uu * c - (off + offset) * s
        ay = uu * s + (off + offset) * c
        arm_angle = theta + math.pi / 2 + rng.uniform(-0.6, 0.6, n)
        arms = _rods(xx, yy, ax, ay, arm_len, rng.uniform(1.0, 1.4, n).astype(np.float32), arm_angle)
        return body + arms

    if kind == 0:  # metaphase plate, side view
        dens = plate(rng.uniform(8.0, 13.0), rng.uniform(2.2, 3.8), 0.0, rng.uniform(-0.02, 0.02))
    elif kind == 1:  # prometaphase clump
        n = int(rng.integers(10, 19))
        rc = rng.uniform(5.0, 9.0)
        r = rc * np.sqrt(rng.uniform(0.0, 1.0, n))
        a = rng.uniform(0.0, 2 * math.pi, n)
        dens = _rods(
            xx,
            yy,
            (r * np.cos(a)).astype(np.float32),
            (r * np.sin(a)).astype(np.float32),
            rng.uniform(1.8, 3.8, n).astype(np.float32),
            rng.uniform(1.1, 1.7, n).astype(np.float32),
            rng.uniform(0.0, math.pi, n),
        )
        dens = dens + 0.6 * _sigmoid(0.55 * rc - np.sqrt(xx * xx + yy * yy), 1.0)
    elif kind == 2:  # metaphase seen end-on: a ring of chromosomes around a pale centre
        n = int(rng.integers(10, 17))
        rr = rng.uniform(5.0, 8.0)
        a = np.sort(rng.uniform(0.0, 2 * math.pi, n))
        r = rr + rng.normal(0.0, 0.8, n)
        dens = _rods(
            xx,
            yy,
            (r * np.cos(a)).astype(np.float32),
            (r * np.sin(a)).astype(np.float32),
            rng.uniform(2.0, 3.5, n).astype(np.float32),
            rng.uniform(1.1, 1.5, n).astype(np.float32),
            a + rng.normal(0.0, 0.4, n),
        )
    else:  # anaphase: two plates moving apart, bowed away from each other
        sep = rng.uniform(5.0, 8.5)
        bow = rng.uniform(0.0, 0.03)
        hl = rng.uniform(6.0, 10.0)
        ht = rng.uniform(1.6, 2.6)
        dens = plate(hl, ht, sep, -bow) + plate(hl, ht, -sep, bow)

    mask = 1.0 - np.exp(-3.0 * dens)
    h = (rng.uniform(1.5, 2.1) * mask).astype(np.float32)
    # Dividing cells round up and their cytoplasm clears: a pale halo.
    d = np.sqrt(xx * xx + yy * yy)
    halo = _sigmoid(rng.uniform(12.0, 16.0) - d, 0.6)
    e = (1.0 - 0.5 * halo).astype(np.float32)
    return h, e


def _lookalike_patch(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Hematoxylin OD and eosin factor of a hard negative: dark but round and smooth.

    Pyknotic nuclei, dark (hyperchromatic) interphase nuclei and apoptotic bodies: the
    cells that pathologists flag as mitosis look-alikes. Their outlines are smooth
    and convex and they are less dark than mitoses, which is what sets them apart.
    """
    xx, yy = _local_grid(_SPECIAL_RADIUS)
    kind = rng.choice(3, p=[0.35, 0.4, 0.25])
    d0 = np.sqrt(xx * xx + yy * yy)
    if kind == 0:  # pyknotic: small, round, very homogeneous
        r = rng.uniform(4.0, 6.5)
        d = _ellipse_distance(xx, yy, r, r * rng.uniform(0.85, 1.0), rng.uniform(0, math.pi))
        mask = _sigmoid(1.0 - d, 2.5 * r)
        od = rng.uniform(0.9, 1.25)
        halo_r = r + rng.uniform(4.0, 7.0)
        eos = 1.5
    elif kind == 1:  # dark interphase nucleus
        a = rng.uniform(6.0, 9.5)
        d = _ellipse_distance(xx, yy, a, a * rng.uniform(0.75, 1.0), rng.uniform(0, math.pi))
        mask = _sigmoid(1.0 - d, 2.0 * a)
        od = rng.uniform(0.8, 1.15)
        halo_r = a + 1.0
        eos = 0.7  # the nucleus displaces cytoplasm
    else:  # apoptotic bodies: a few smooth round fragments in eosinophilic cytoplasm
        n = int(rng.integers(2, 5))
        spread = rng.uniform(3.0, 6.5)
        ang = rng.uniform(0.0, 2 * math.pi, n)
        rad = spread * np.sqrt(rng.uniform(0.0, 1.0, n))
        rr = rng.uniform(2.2, 4.2, n)
        cx = rad * np.cos(ang)
        cy = rad * np.sin(ang)
        mask = np.zeros_like(xx)
        for i in range(n):
            di = np.sqrt((xx - cx[i]) ** 2 + (yy - cy[i]) ** 2) / rr[i]
            mask = np.maximum(mask, _sigmoid(1.0 - di, 2.5 * rr[i]))
        od = rng.uniform(0.9, 1.3)
        halo_r = spread + rng.uniform(5.0, 8.0)
        eos = 1.6
    h = (od * mask).astype(np.float32)
    e = (1.0 + (eos - 1.0) * _sigmoid(halo_r - d0, 0.8)).astype(np.float32)
    return h, e


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


def _stamp_nuclei(
    rng: np.random.Generator,
    canvas: _Canvas,
    eos_log: _Canvas,
    xs: np.ndarray,
    ys: np.ndarray,
    stromal: np.ndarray,
    fibre_angle: np.ndarray,
) -> None:
    """Normal nuclei, drawn in one batch: vesicular tumour nuclei and spindle stroma."""
    n = len(xs)
    if n == 0:
        return
    radius = 14  # longest semi-axis is 12 px; a smaller patch keeps the batch cheap
    xx, yy = _local_grid(radius)
    # Tumour: plump, round-ish, pale with a darker rim. Stroma: thin spindles along
    # the collagen fibres. Lymphocyte-like small dark round nuclei: a few everywhere.
    lymph = rng.uniform(0.0, 1.0, n) < 0.04
    a = np.where(stromal, rng.uniform(7.0, 12.0, n), rng.uniform(6.5, 10.5, n))
    b = np.where(stromal, rng.uniform(2.0, 3.2, n), a * rng.uniform(0.65, 1.0, n))
    theta = np.where(stromal, fibre_angle + rng.normal(0.0, 0.2, n), rng.uniform(0.0, math.pi, n))
    od = np.where(stromal, rng.uniform(0.55, 0.8, n), rng.uniform(0.4, 0.68, n))
    rim = np.where(stromal, 0.1, rng.uniform(0.1, 0.35, n))
    r_l = rng.uniform(3.5, 4.8, n)
    a = np.where(lymph, r_l, a)
    b = np.where(lymph, r_l * rng.uniform(0.9, 1.0, n), b)
    od = np.where(lymph, rng.uniform(0.75, 0.95, n), od)
    rim = np.where(lymph, 0.0, rim)

    a, b, od, rim = (np.asarray(t, dtype=np.float32) for t in (a, b, od, rim))
    c = np.cos(theta).astype(np.float32)[:, None, None]
    s = np.sin(theta).astype(np.float32)[:, None, None]
    u = (xx[None] * c + yy[None] * s) / a[:, None, None]
    v = (-xx[None] * s + yy[None] * c) / b[:, None, None]
    d = np.sqrt(u * u + v * v)
    # Slightly lobulated outline (2nd and 3rd angular harmonics) so nuclei are not
    # perfect ellipses; written with u, v instead of arctan2/sin, which cost 3x more.
    p2 = rng.uniform(0.0, 2 * math.pi, n).astype(np.float32)[:, None, None]
    p3 = rng.uniform(0.0, 2 * math.pi, n).astype(np.float32)[:, None, None]
    dn = np.maximum(d, np.float32(1e-3))
    cu, sv = u / dn, v / dn  # cos and sin of the polar angle
    sin2 = 2 * sv * cu
    cos2 = cu * cu - sv * sv
    sin3 = sv * (3 * cu * cu - sv * sv)
    cos3 = cu * (cu * cu - 3 * sv * sv)
    d = d / (
        1.0
        + 0.05 * (sin2 * np.cos(p2) + cos2 * np.sin(p2))
        + 0.04 * (sin3 * np.cos(p3) + cos3 * np.sin(p3))
    )
    edge = (1.5 * b)[:, None, None].astype(np.float32)
    mask = 0.5 + 0.5 * np.tanh(0.5 * edge * (1.0 - d))  # edge about 1 px wide whatever the size
    ring = np.exp(-(((d - 0.88) / 0.14) ** 2))
    h = od[:, None, None] * mask * (1.0 - rim[:, None, None] * 0.45 + rim[:, None, None] * ring)
    # Nucleoli: one small dark dot in most tumour nuclei.
    has_nuc = (~stromal) & (~lymph) & (rng.uniform(0.0, 1.0, n) < 0.7)
    nr = rng.uniform(0.0, 0.35, n).astype(np.float32)
    na = rng.uniform(0.0, 2 * math.pi, n).astype(np.float32)
    ncx = (nr * a * np.cos(na))[:, None, None]
    ncy = (nr * b * np.sin(na))[:, None, None]
    nucleolus = np.exp(((xx[None] - ncx) ** 2 + (yy[None] - ncy) ** 2) * np.float32(-1 / (2 * 1.1**2)))
    h = h + (has_nuc * od * np.float32(0.9))[:, None, None] * nucleolus
    h = h.astype(np.float32)
    e = np.log1p(-0.55 * mask).astype(np.float32)  # nuclei displace the pink cytoplasm
    for i in range(n):
        xi, yi = int(xs[i]), int(ys[i])
        canvas.window(xi, yi, radius)[...] += h[i]
        eos_log.window(xi, yi, radius)[...] += e[i]


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


# ---------------------------------------------------------------------------
# Acquisition: the scanner
# ---------------------------------------------------------------------------


def apply_scanner(
    hem: np.ndarray, eos: np.ndarray, scanner: ScannerProfile, rng: np.random.Generator
) -> np.ndarray:
    """Turn stain OD maps into the (H, W, 3) uint8 RGB image this scanner would record."""
    from scipy.ndimage import gaussian_filter

    if scanner.blur_sigma > 0:
        # Blurring the two OD maps instead of three RGB channels: a third cheaper, and
        # at sigma ~1 px indistinguishable from blurring intensities.
        hem = gaussian_filter(hem, scanner.blur_sigma)
        eos = gaussian_filter(eos, scanner.blur_sigma)
    g = scanner.gamma
    vh = np.asarray(scanner.hematoxylin, dtype=np.float64)
    ve = np.asarray(scanner.eosin, dtype=np.float64)
    vh = (g * scanner.stain_scale[0] / np.linalg.norm(vh)).astype(np.float32) * vh.astype(np.float32)
    ve = (g * scanner.stain_scale[1] / np.linalg.norm(ve)).astype(np.float32) * ve.astype(np.float32)
    # Beer-Lambert, tone curve and contrast folded into one affine map of exp(-gamma OD):
    # 255 * (white * exp(-od) / 255) ** gamma == 255 * (white / 255) ** gamma * exp(-gamma * od)
    white = np.asarray(scanner.white, dtype=np.float64)
    scale = (scanner.contrast * 255.0 * (white / 255.0) ** g).astype(np.float32)
    offset = np.float32(128.0 * (1.0 - scanner.contrast) + scanner.brightness)
    rgb = np.exp(-(hem[..., None] * vh + eos[..., None] * ve))
    rgb *= scale
    rgb += offset
    if scanner.noise_sigma > 0:
        rgb += np.float32(scanner.noise_sigma) * rng.standard_normal(rgb.shape, dtype=np.float32)
    np.rint(rgb, out=rgb)
    np.clip(rgb, 0, 255, out=rgb)
    return rgb.astype(np.uint8)


def synth_image(
    seed: int, scanner: ScannerProfile | int, width: int, height: int, *, content_key: tuple[int, ...] = ()
) -> tuple[np.ndarray, list[SynthObject]]:
    """One synthetic image and its labelled objects.

    The content depends only on (seed, content_key), not on the scanner, so the same
    tissue can be rendered by every scanner for paired domain-shift experiments.
    """
    profile = SCANNERS[scanner] if isinstance(scanner, int) else scanner
    content_ss = np.random.SeedSequence(seed, spawn_key=(0, *content_key))
    scan_ss = np.random.SeedSequence(seed, spawn_key=(1, *content_key, _scanner_key(profile)))
    hem, eos, objects = render_content(np.random.default_rng(content_ss), width, height)
    rgb = apply_scanner(hem, eos, profile, np.random.default_rng(scan_ss))
    return rgb, objects


def _scanner_key(profile: ScannerProfile) -> int:
    # Stable integer per scanner name for seeding (hash() is salted per process).
    import zlib

    return zlib.crc32(profile.name.encode("utf-8"))


def write_tiff(path: str | Path, rgb: np.ndarray, scanner: ScannerProfile) -> None:
    """Lossless RGB TIFF with the scanner's resolution tags, as the MIDOG files have."""
    import tifffile

    tifffile.imwrite(
        path,
        rgb,
        photometric="rgb",
        compression="zlib",
        compressionargs={"level": 1},  # levels 6-9 cost 2-3x the time for 1-2 % smaller files
        predictor=2,  # horizontal differencing: smooth tissue compresses ~2x better
        resolution=(scanner.resolution, scanner.resolution),
        resolutionunit=scanner.resolution_unit,
        metadata=None,  # no JSON description: the file is the image and its tags only
    )


# ---------------------------------------------------------------------------
# Data set
# ---------------------------------------------------------------------------


def _coco(images: list[dict], annotations: list[dict]) -> dict[str, Any]:
    return {
        "info": dict(INFO),
        "licenses": [dict(x) for x in LICENSES],
        "images": images,
        "categories": [dict(c) for c in CATEGORIES],
        "annotations": annotations,
    }


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=1) + "\n", encoding="utf-8")


def make_dataset(
    out_dir: str | Path,
    *,
    seed: int = 0,
    images_per_scanner: int = 4,
    size: tuple[int, int] = (1024, 1024),
    workers: int | None = None,
) -> dict[str, Any]:
    """Write a synthetic MIDOG-layout data set to `out_dir` and return a summary.

    size is (width, height). Scanner k (0-based) gets image ids
    k * images_per_scanner + 1 ... (k + 1) * images_per_scanner, as the real scanners
    get contiguous id ranges. Files written: the TIFFs, MIDOG.json (labels of the
    first three scanners), unlabeled_annotations.json (the last scanner's labels),
    ground_truth.json (official evaluator form, mitotic figures of all scanners, mm),
    domains.json and scanners.json.

    workers: images rendered at once in threads (default: up to 2, by CPU count). The
    output does not depend on it: every image has its own random stream.
    """
    import os
    from concurrent.futures import ThreadPoolExecutor

    from .errors import MidogError

    width, height = (int(v) for v in size)
    if seed < 0:
        raise MidogError(f"seed must be >= 0, got {seed}")
    if images_per_scanner < 1:
        raise MidogError(f"images per scanner must be >= 1, got {images_per_scanner}")
    if width < 2 * BORDER_MARGIN + 16 or height < 2 * BORDER_MARGIN + 16:
        raise MidogError(f"image size {width}x{height} is too small (min {2 * BORDER_MARGIN + 16} px a side)")
    if workers is None:
        workers = min(2, os.cpu_count() or 1)
    if workers < 1:
        raise MidogError(f"workers must be >= 1, got {workers}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    jobs = [(k, i) for k in range(len(SCANNERS)) for i in range(images_per_scanner)]

    def render(job: tuple[int, int]) -> list[SynthObject]:
        k, i = job
        rgb, objects = synth_image(seed, SCANNERS[k], width, height, content_key=(k, i))
        write_tiff(out / f"{k * images_per_scanner + i + 1:03d}.tiff", rgb, SCANNERS[k])
        return objects

    # Threads, not processes: the big numpy/scipy/zlib calls release the GIL, and
    # threads start instantly and are safe inside callers' own process pools.
    if workers == 1:
        rendered = [render(j) for j in jobs]
    else:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            rendered = list(pool.map(render, jobs))
    objects_of = dict(zip(jobs, rendered))

    images: list[dict] = []
    labelled: list[dict] = []
    unlabeled: list[dict] = []
    unlabeled_images: list[dict] = []
    ground_truth: dict[str, list[list[float]]] = {}
    domains: dict[str, str] = {}
    scanners_info: dict[str, dict[str, Any]] = {}
    ann_id = 0
    paths: list[str] = []
    for k, scanner in enumerate(SCANNERS):
        first = k * images_per_scanner + 1
        last = (k + 1) * images_per_scanner
        counts = {c["name"]: 0 for c in CATEGORIES}
        for i in range(images_per_scanner):
            image_id = first + i
            name = f"{image_id:03d}.tiff"
            objects = objects_of[(k, i)]
            paths.append(str(out / name))
            entry = {"license": 1, "file_name": name, "id": image_id, "width": width, "height": height}
            images.append(entry)
            domains[name] = scanner.name
            points = []
            for obj in objects:
                ann_id += 1
                ann = {"bbox": obj.bbox, "category_id": obj.category_id, "image_id": image_id, "id": ann_id}
                (unlabeled if scanner.name == UNLABELED_SCANNER else labelled).append(ann)
                counts[CATEGORIES[obj.category_id - 1]["name"]] += 1
                if obj.category_id == CATEGORY_MITOSIS:
                    points.append([obj.x * scanner.spacing_mm, obj.y * scanner.spacing_mm, 0])
            ground_truth[name] = points
            if scanner.name == UNLABELED_SCANNER:
                unlabeled_images.append(dict(entry))
        scanners_info[scanner.name] = {
            "id_range": [first, last],
            "spacing_mm": scanner.spacing_mm,
            "labelled": scanner.name != UNLABELED_SCANNER,
            "counts": counts,
        }

    files = {
        "midog_json": out / "MIDOG.json",
        "unlabeled_annotations_json": out / "unlabeled_annotations.json",
        "ground_truth_json": out / "ground_truth.json",
        "domains_json": out / "domains.json",
        "scanners_json": out / "scanners.json",
    }
    _write_json(files["midog_json"], _coco(images, labelled))
    _write_json(files["unlabeled_annotations_json"], _coco(unlabeled_images, unlabeled))
    _write_json(files["ground_truth_json"], ground_truth)
    _write_json(files["domains_json"], domains)
    _write_json(
        files["scanners_json"],
        {
            "scanners": [s.name for s in SCANNERS],
            "unlabeled": UNLABELED_SCANNER,
            "id_ranges": {n: v["id_range"] for n, v in scanners_info.items()},
            "spacing_mm": {n: v["spacing_mm"] for n, v in scanners_info.items()},
            "seed": seed,
            "size": [width, height],
        },
    )
    totals = {c["name"]: sum(v["counts"][c["name"]] for v in scanners_info.values()) for c in CATEGORIES}
    return {
        "out_dir": str(out),
        "images": paths,
        **{k: str(v) for k, v in files.items()},
        "scanners": scanners_info,
        "counts": {"images": len(images), **totals},
    }


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------


def _parse_size(text: str) -> tuple[int, int]:
    parts = text.lower().split("x")
    try:
        if len(parts) == 1:
            w = h = int(parts[0])
        elif len(parts) == 2:
            w, h = int(parts[0]), int(parts[1])
        else:
            raise ValueError
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, e.g. 1024x1024, got {text!r}") from None
    if w <= 0 or h <= 0:
        raise argparse.ArgumentTypeError(f"size must be positive, got {text!r}")
    return w, h


def add_cli(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "synth",
        help="write a synthetic multi-scanner data set in the MIDOG layout",
        description=(
            "Write synthetic H&E-like TIFFs from four synthetic scanners plus MIDOG.json, "
            "unlabeled_annotations.json (last scanner), ground_truth.json, domains.json "
            "and scanners.json. Same arguments give byte-identical files."
        ),
    )
    p.add_argument("out_dir", metavar="OUT_DIR", help="output folder (created if missing)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument(
        "--images-per-scanner", type=int, default=4, metavar="N", help="images per scanner (default 4)"
    )
    p.add_argument(
        "--size", type=_parse_size, default=(1024, 1024), metavar="WxH", help="image size (default 1024x1024)"
    )
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help="images rendered in parallel threads (default: up to 2); the output does not depend on it",
    )
    p.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    import time

    t0 = time.perf_counter()
    summary = make_dataset(
        args.out_dir,
        seed=args.seed,
        images_per_scanner=args.images_per_scanner,
        size=args.size,
        workers=args.workers,
    )
    dt = time.perf_counter() - t0
    print(f"wrote {summary['counts']['images']} images to {summary['out_dir']} in {dt:.1f} s")
    for name, info in summary["scanners"].items():
        first, last = info["id_range"]
        c = info["counts"]
        tag = "" if info["labelled"] else "  (unlabeled: labels in unlabeled_annotations.json)"
        print(
            f"  {name}: ids {first}-{last}, {info['spacing_mm'] * 1000:.4f} um/px, "
            f"{c['mitotic figure']} mitotic figures, {c['not mitotic figure']} look-alikes{tag}"
        )
    return 0


# ---------------------------------------------------------------------------
# Whole-slide image
# ---------------------------------------------------------------------------


def make_slide(
    path: str | Path,
    width: int,
    height: int,
    *,
    seed: int = 0,
    n_regions: int = 4,
    region_size: int = 2048,
    tile: int = 512,
    levels: int = 4,
) -> list[tuple[int, int, int]]:
    """A pyramidal, tiled, JPEG-compressed slide: white glass with `n_regions` square
    patches of synthetic tissue (scanner A). Written tile by tile, so even a slide far
    bigger than memory is made in bounded memory. Levels are separate IFDs (downsample 4
    each), which both openslide and tiffslide read. Returns the regions as (x, y, size).
    """
    import tifffile

    rng = np.random.default_rng(seed)
    regions = []
    for k in range(n_regions):
        # Keep regions on a coarse grid, apart from each other and inside the slide.
        x = int(rng.integers(0, max(1, width - region_size)) // tile * tile)
        y = int(rng.integers(0, max(1, height - region_size)) // tile * tile)
        regions.append((x, y, region_size))
    patches = [synth_image(seed, 0, region_size, region_size, content_key=(k,))[0] for k in range(n_regions)]
    glass = np.array([242, 242, 240], np.uint8)
    profile = SCANNERS[0]

    def tiles(level: int):
        factor = 4**level
        lw, lh = -(-width // factor), -(-height // factor)
        scaled = [p[::factor, ::factor] for p in patches]
        for ty in range(0, lh, tile):
            for tx in range(0, lw, tile):
                out = np.empty((tile, tile, 3), np.uint8)
                out[:] = glass
                for (rx, ry, rs), patch in zip(regions, scaled):
                    rx, ry = rx // factor, ry // factor
                    x0, y0 = max(tx, rx), max(ty, ry)
                    x1, y1 = min(tx + tile, rx + patch.shape[1]), min(ty + tile, ry + patch.shape[0])
                    if x0 < x1 and y0 < y1:
                        out[y0 - ty : y1 - ty, x0 - tx : x1 - tx] = patch[y0 - ry : y1 - ry, x0 - rx : x1 - rx]
                yield out

    mpp_res = profile.resolution
    with tifffile.TiffWriter(path, bigtiff=True) as tif:
        for level in range(levels):
            factor = 4**level
            lw, lh = -(-width // factor), -(-height // factor)
            tif.write(
                tiles(level),
                shape=(lh, lw, 3),
                dtype=np.uint8,
                tile=(tile, tile),
                photometric="rgb",
                compression="jpeg",
                compressionargs={"level": 90},
                resolution=(mpp_res / factor, mpp_res / factor),
                resolutionunit=profile.resolution_unit,
                subfiletype=1 if level else 0,
                metadata=None,
            )
    return regions
