"""The picture a pathologist opens first: a thumbnail of the image with the tissue outline,
every mitotic figure, the hotspot with its count, a scale bar and, optionally, a density
heatmap in mitoses per mm².

Drawn in millimetres, so that shapes are true even where the pixels are not square. The
PNG is the image scaled to `SIDE_PX` on its long side (in mm), with nothing around it, so
its pixels map linearly onto the image: (x, y) mm -> (x, y) * SIDE_PX / long side in mm.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .count import CountResult

SIDE_PX = 1600
HOTSPOT_COLOUR = (1.0, 0.84, 0.0)  # gold: stands out on H&E pink and purple
FIGURE_COLOUR = (0.0, 0.9, 1.0)  # cyan rings: visible on tissue, unlike red on eosin
TISSUE_COLOUR = (0.1, 0.75, 0.1)


def output_size(size_px: tuple[int, int], spacing_mm: tuple[float, float]) -> tuple[int, int]:
    """The PNG's (width, height) for an image of `size_px` pixels of `spacing_mm`."""
    w, h = size_px[0] * spacing_mm[0], size_px[1] * spacing_mm[1]
    scale = SIDE_PX / max(w, h)
    return max(1, round(w * scale)), max(1, round(h * scale))


def draw_overlay(result: "CountResult", path: str | Path, heatmap: bool = False) -> Path:
    """Draw a count (its detections carry the thumbnail and the image's size) into `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import patches, patheffects

    from ..atomic import write_bytes_atomic

    detections = result.detections
    if detections is None or detections.thumbnail is None or detections.image_size is None:
        raise ValueError("the overlay needs a count whose detections carry the image's thumbnail and size")
    size_px, spacing_mm = detections.image_size, detections.spacing_mm
    thumbnail, downsample = detections.thumbnail.pixels, detections.thumbnail.downsample
    sx, sy = spacing_mm
    width, height = size_px[0] * sx, size_px[1] * sy  # mm
    out_w, out_h = output_size(size_px, spacing_mm)
    dpi = 100
    fig = plt.figure(figsize=(out_w / dpi, out_h / dpi), dpi=dpi)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_axis_off()
    # The thumbnail may cover a little more than the image (rounded-up last cells).
    th, tw = thumbnail.shape[:2]
    ax.imshow(thumbnail, extent=(0, tw * downsample * sx, th * downsample * sy, 0), interpolation="antialiased", aspect="auto")
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)
    scale = out_w / width  # output px per mm
    halo = [patheffects.withStroke(linewidth=4, foreground="black")]

    tissue = result.tissue
    if tissue.mask.any():
        cw, ch = tissue.cell_mm
        rows, cols = tissue.mask.shape
        padded = np.pad(tissue.mask.astype(float), 1)
        xs = (np.arange(cols + 2) - 0.5) * cw
        ys = (np.arange(rows + 2) - 0.5) * ch
        ax.contour(xs, ys, padded, levels=[0.5], colors=[TISSUE_COLOUR], linewidths=2)

    if heatmap and len(result.figures_mm):
        _heatmap(ax, fig, result, width, height)

    figures = result.figures_mm
    if len(figures):
        # Rings ~30 um across (in points, 0.72 per px at 100 dpi), kept between readable and uncluttered.
        ring = float(np.clip(0.03 * scale * 0.72, 6.0, 14.0)) ** 2
        ax.scatter(figures[:, 0], figures[:, 1], s=ring, facecolors="none", edgecolors=[FIGURE_COLOUR], linewidths=1.2)

    summary = result.summary
    spot = summary["hotspot"]
    if spot is not None:
        cx, cy = spot["center_mm"]
        if spot["shape"] == "circle":
            shape = patches.Circle((cx, cy), np.sqrt(spot["area_mm2"] / np.pi))
        else:
            side = np.sqrt(spot["area_mm2"])
            shape = patches.Rectangle((cx - side / 2, cy - side / 2), side, side)
        shape.set(fill=False, edgecolor=HOTSPOT_COLOUR, linewidth=3, path_effects=halo)
        ax.add_patch(shape)
        # The count sits just outside the outline (above it, or below when the top is cut off),
        # where it hides no figure.
        reach = np.sqrt(spot["area_mm2"] / np.pi) if spot["shape"] == "circle" else np.sqrt(spot["area_mm2"]) / 2
        above = cy - reach > 0.08 * height
        ax.text(
            cx, cy - reach if above else min(cy + reach, 0.97 * height), f"{spot['count']}", color=HOTSPOT_COLOUR,
            fontsize=22, fontweight="bold", ha="center", va="bottom" if above else "top", path_effects=halo,
        )

    lines = [f"{summary['mitotic_figures']} mitotic figures in {summary['tissue_area_mm2']:.2f} mm² tissue"]
    if summary["per_mm2"] is not None:
        lines[0] += f" ({summary['per_mm2']:.1f}/mm²)"
    if spot is not None:
        lines.append(
            f"hotspot ({spot['area_mm2']:g} mm² {spot['shape']}): {spot['count']} = {spot['per_mm2']:.1f}/mm², mitotic score {summary['score']}"
        )
    ax.text(
        0.01, 0.01, "\n".join(lines), transform=ax.transAxes, ha="left", va="bottom", fontsize=11,
        bbox={"boxstyle": "round", "facecolor": "white", "alpha": 0.85, "edgecolor": "0.5"},
    )
    _scale_bar(ax, width, height)

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    plt.close(fig)
    return write_bytes_atomic(path, buffer.getvalue())


def _scale_bar(ax: "object", width: float, height: float) -> None:
    # The largest of 0.05 / 0.1 / 0.2 / 0.5 / 1 / 2 / 5 / 10 mm that fits a fifth of the width.
    length = max((v for v in (0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10) if v <= width / 5), default=0.05)
    x1, y = width * 0.97, height * 0.96
    x0 = x1 - length
    ax.plot([x0, x1], [y, y], color="black", linewidth=5, solid_capstyle="butt")  # type: ignore[attr-defined]
    label = f"{length:g} mm" if length >= 1 else f"{length * 1000:g} µm"
    ax.text((x0 + x1) / 2, y - height * 0.01, label, ha="center", va="bottom", fontsize=11,  # type: ignore[attr-defined]
            bbox={"facecolor": "white", "alpha": 0.7, "edgecolor": "none", "pad": 1})


def _heatmap(ax: "object", fig: "object", result: "CountResult", w_mm: float, h_mm: float) -> None:
    """The density the hotspot maximises, drawn as contour lines (the slide stays untinted):
    at each point of a fine grid, the figures a hotspot-sized region centred there holds, per
    mm². Lines at a quarter, half and three quarters of the hotspot's own density, whose value
    tops the colour scale, so that scale and the hotspot's per mm² agree."""
    from scipy.spatial import cKDTree

    from .hotspot import region_size

    spot = result.hotspot
    top = spot.count / spot.area_mm2
    if spot.center_mm is None or spot.count == 0:
        return
    step = min(w_mm, h_mm) / 64  # 64 points across the shorter side, whatever the hotspot's size
    xs, ys = np.arange(step / 2, w_mm, step), np.arange(step / 2, h_mm, step)
    gx, gy = np.meshgrid(xs, ys)
    size = region_size(spot.shape, spot.area_mm2)
    reach, norm = (size, 2) if spot.shape == "circle" else (size / 2, np.inf)
    held = cKDTree(result.figures_mm).query_ball_point(np.stack([gx.ravel(), gy.ravel()], 1), reach, p=norm, return_length=True)
    density = np.asarray(held, float).reshape(gx.shape) / spot.area_mm2
    from matplotlib import patheffects

    levels = [f * top for f in (0.25, 0.5, 0.75)]
    # Labelled lines in one dark colour with a light halo: the values are on the lines, so no
    # colour scale can disagree with the hotspot's own density.
    lines = ax.contour(xs, ys, density, levels=levels, colors=["#3b0f70"], linewidths=1.6)  # type: ignore[attr-defined]
    plt_effects = [patheffects.withStroke(linewidth=3.5, foreground="white")]
    for line in getattr(lines, "collections", [lines]):
        line.set_path_effects(plt_effects)
    for text in ax.clabel(lines, fmt=lambda v: (f"{v:.0f}" if v >= 100 else f"{v:.3g}") + "/mm²", fontsize=9):  # type: ignore[attr-defined]
        text.set_path_effects(plt_effects)
    ax.set_xlim(0, w_mm)  # type: ignore[attr-defined]
    ax.set_ylim(h_mm, 0)  # type: ignore[attr-defined]
    ax.text(0.99, 0.99, f"density lines: figures in a {spot.area_mm2:.3g} mm² {spot.shape} per mm², at 25/50/75% of the hotspot's {top:.1f}/mm²",  # type: ignore[attr-defined]
            transform=ax.transAxes, ha="right", va="top", fontsize=9, bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "none", "pad": 2})
