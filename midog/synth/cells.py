"""Drawing primitives and single cells: smooth random fields, the padded canvas,
normal nuclei, mitotic figures and their look-alikes, all as stain optical density."""

from __future__ import annotations

import math

import numpy as np


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

    def polar_rods(r: np.ndarray, a: np.ndarray, length: np.ndarray, width: np.ndarray, angle: np.ndarray) -> np.ndarray:
        # Chromosomes centred at polar coordinates (r, a) around the cell's centre.
        f32 = np.float32
        return _rods(xx, yy, (r * np.cos(a)).astype(f32), (r * np.sin(a)).astype(f32), length.astype(f32), width.astype(f32), angle)

    if kind == 0:  # metaphase plate, side view
        dens = plate(rng.uniform(8.0, 13.0), rng.uniform(2.2, 3.8), 0.0, rng.uniform(-0.02, 0.02))
    elif kind == 1:  # prometaphase clump
        n = int(rng.integers(10, 19))
        rc = rng.uniform(5.0, 9.0)
        r = rc * np.sqrt(rng.uniform(0.0, 1.0, n))
        a = rng.uniform(0.0, 2 * math.pi, n)
        dens = polar_rods(r, a, rng.uniform(1.8, 3.8, n), rng.uniform(1.1, 1.7, n), rng.uniform(0.0, math.pi, n))
        dens = dens + 0.6 * _sigmoid(0.55 * rc - np.sqrt(xx * xx + yy * yy), 1.0)
    elif kind == 2:  # metaphase seen end-on: a ring of chromosomes around a pale centre
        n = int(rng.integers(10, 17))
        rr = rng.uniform(5.0, 8.0)
        a = np.sort(rng.uniform(0.0, 2 * math.pi, n))
        r = rr + rng.normal(0.0, 0.8, n)
        dens = polar_rods(r, a, rng.uniform(2.0, 3.5, n), rng.uniform(1.1, 1.5, n), a + rng.normal(0.0, 0.4, n))
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
