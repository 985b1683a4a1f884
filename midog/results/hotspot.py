"""The hotspot: the placement of a circle or an axis-aligned square of a given area, its
centre anywhere in the tissue, that holds the most points. Exact, not a grid search.

Everything is in millimetres. The tissue is a mask of cells (pixels of a thumbnail), each
cell a closed rectangle; a region holds a point when the point lies inside or on its edge.

Why the method is exact. Take an optimal centre c* and the set S of points it holds. The
centres that hold all of S form a convex set L (an intersection of disks, or of squares).
L has a "corner" v that can be computed from the points alone:
  - circles: a point where two circles of radius r around points of S cross (a circle
    through two points), or, when S sits at one place, that point itself;
  - squares: (largest x of S - side/2, largest y of S - side/2).
Every centre in L holds at least |S| points. If v lies in tissue it is as good as c*.
If not, the segment from c* (in tissue) to v (not) lies in L and leaves the tissue through
its boundary, a set of axis-aligned edges between tissue and non-tissue cells: so some
centre on the tissue boundary is as good as c*. Hence the maximum is the better of
  1. the corner candidates that lie in tissue, and
  2. the best centre on each boundary segment: a 1-D problem (each point covers an
     interval of the segment), solved exactly by sorting the interval ends.
Upper bounds prune both: a corner on point i's circle can hold only the points within
2r of i; a boundary segment only the points within reach of it. Candidates are visited
best bound first and skipped once the bound cannot beat the best count found.

Grown sets (the review page's slider, figures added as the threshold falls; `Growing`):
when the points are a previous set P with its exact maximum M and new points N, a region
holding no new point holds at most M, which the previous centre still holds. A better
region holds some n in N, so its corner lies on the circle of a point within 2r of n
(squares: a point within one side of n in both axes), or its best centre on a boundary
segment within reach of n: only those candidates are searched. And the best count a point's
corners reached in the last search, plus the new points that can join them, bounds them
now: far tighter than all the points within 2r, so most points are not swept again. The
result is as exact as a search from nothing.

Comparisons allow a relative tolerance of 1e-9 (picometres on a slide), so points exactly
on an edge (ties, points 2r apart) count as they should despite rounding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from scipy.spatial import cKDTree

SHAPES = ("circle", "square")
TOL = 1e-9


@dataclass(frozen=True)
class TissueMap:
    """Where a centre may go: `mask` cells of `cell_mm` (width, height), clipped to the
    image's `extent_mm` (width, height). Cell (row i, column j) covers
    [j w, (j+1) w] x [i h, (i+1) h]."""

    mask: np.ndarray
    cell_mm: tuple[float, float]
    extent_mm: tuple[float, float]

    @staticmethod
    def everywhere(extent_mm: tuple[float, float]) -> "TissueMap":
        """The whole image is tissue."""
        return TissueMap(np.ones((1, 1), bool), extent_mm, extent_mm)

    def _edges(self, axis: int) -> np.ndarray:
        """Cell boundaries along x (axis 0) or y (axis 1), the last one clipped to the image."""
        n = self.mask.shape[1 - axis]
        return np.minimum(np.arange(n + 1) * self.cell_mm[axis], self.extent_mm[axis])

    def area_mm2(self) -> float:
        widths, heights = np.diff(self._edges(0)), np.diff(self._edges(1))
        return float(heights @ self.mask.astype(float) @ widths)

    def contains(self, xy: np.ndarray) -> np.ndarray:
        """Whether each (x, y) lies in a tissue cell, edges included (cells are closed)."""
        xy = np.atleast_2d(np.asarray(xy, float))
        rows, cols = self.mask.shape
        inside = np.zeros(len(xy), bool)
        fx, fy = xy[:, 0] / self.cell_mm[0], xy[:, 1] / self.cell_mm[1]
        within = (xy[:, 0] >= 0) & (xy[:, 1] >= 0) & (xy[:, 0] <= self.extent_mm[0]) & (xy[:, 1] <= self.extent_mm[1])
        # A point on a cell edge belongs to the cells on both sides.
        for dx in (0, 1):
            for dy in (0, 1):
                col = np.floor(fx).astype(np.int64) - dx * (fx == np.floor(fx))
                row = np.floor(fy).astype(np.int64) - dy * (fy == np.floor(fy))
                ok = within & (col >= 0) & (row >= 0) & (col < cols) & (row < rows)
                hit = np.zeros(len(xy), bool)
                hit[ok] = self.mask[row[ok], col[ok]]
                inside |= hit
        return inside

    def boundary(self) -> tuple[np.ndarray, np.ndarray]:
        """The tissue boundary as maximal straight runs of cell edges:
        horizontal (y, x0, x1) rows and vertical (x, y0, y1) rows."""
        xs, ys = self._edges(0), self._edges(1)
        padded = np.pad(self.mask, 1)
        horizontal = _runs(padded[:-1, 1:-1] != padded[1:, 1:-1], ys, xs)
        vertical = _runs((padded[1:-1, :-1] != padded[1:-1, 1:]).T, xs, ys)
        return horizontal, vertical

    def first_cell_centre(self) -> np.ndarray | None:
        rows, cols = np.nonzero(self.mask)
        if len(rows) == 0:
            return None
        xs, ys = self._edges(0), self._edges(1)
        i, j = rows[len(rows) // 2], cols[len(cols) // 2]
        return np.array([(xs[j] + xs[j + 1]) / 2, (ys[i] + ys[i + 1]) / 2])


def _runs(edge: np.ndarray, lines: np.ndarray, stops: np.ndarray) -> np.ndarray:
    """Runs of True along each row of `edge` -> (line position, start, end) rows."""
    padded = np.pad(edge, ((0, 0), (1, 1))).astype(np.int8)
    change = np.diff(padded, axis=1)
    row_start, col_start = np.nonzero(change == 1)
    _, col_end = np.nonzero(change == -1)  # same row order as the starts
    out = np.stack([lines[row_start], stops[col_start], stops[col_end]], 1) if len(row_start) else np.zeros((0, 3))
    return out[out[:, 2] > out[:, 1]]  # runs beyond the image's extent are empty


@dataclass(frozen=True)
class Hotspot:
    shape: str
    area_mm2: float
    center_mm: tuple[float, float] | None  # None: no tissue at all
    count: int


def region_size(shape: str, area_mm2: float) -> float:
    """The circle's radius or the square's side, in mm."""
    if shape == "circle":
        return math.sqrt(area_mm2 / math.pi)
    if shape == "square":
        return math.sqrt(area_mm2)
    raise ValueError(f"shape must be one of {SHAPES}, not {shape!r}")


def count_in_region(points: np.ndarray, center: np.ndarray, shape: str, area_mm2: float) -> int:
    """How many points the region centred at `center` holds (edges included)."""
    return int(held_mask(np.asarray(points, float).reshape(-1, 2), center, shape, area_mm2).sum())


def held_mask(points: np.ndarray, center: np.ndarray, shape: str, area_mm2: float) -> np.ndarray:
    """Which of (n, 2) points the region centred at `center` holds."""
    size = region_size(shape, area_mm2)
    d = points - np.asarray(center, float)
    if shape == "circle":
        return np.hypot(d[:, 0], d[:, 1]) <= size * (1 + TOL)
    return np.abs(d).max(1) <= size / 2 * (1 + TOL)


@dataclass
class _Grown:
    """What a search of a grown set starts from (see the module's docstring)."""

    new: np.ndarray  # which points are new
    centre: tuple[float, float] | None  # an optimal centre of the others; None: no others
    upper: np.ndarray  # per point, a bound on what its corners hold now; the search makes it exact where it sweeps


def find_hotspot(points: np.ndarray, tissue: TissueMap, shape: str = "circle", area_mm2: float = 2.0, grown: _Grown | None = None) -> Hotspot:
    """The exact maximum of points held by the region over every centre in tissue."""
    from scipy.spatial import cKDTree

    points = np.asarray(points, float).reshape(-1, 2)
    size = region_size(shape, area_mm2)
    seed = tissue.first_cell_centre()
    if seed is None:
        return Hotspot(shape, area_mm2, None, 0)
    best = _Best(seed, 0)
    near_new, upper = None, None if grown is None else grown.upper
    new_points = points if grown is None else points[grown.new]
    if grown is not None and grown.centre is not None:
        best = _Best(np.asarray(grown.centre, float), count_in_region(points, np.asarray(grown.centre, float), shape, area_mm2))
    if len(points) and len(new_points):
        tree = cKDTree(points)
        norm = 2 if shape == "circle" else np.inf
        reach = size if shape == "circle" else size / 2  # distance from the centre that a point may be
        if grown is not None and grown.centre is not None:  # the points whose corners may hold a new point
            corner_reach = 2 * size if shape == "circle" else size
            near_new = np.zeros(len(points), bool)
            for hits in tree.query_ball_point(new_points, corner_reach * (1 + TOL), p=norm):
                near_new[hits] = True
        # Grown: a set that sits at one place and beats the last one holds a new point.
        _centres_on_points(new_points, tree, tissue, reach * (1 + TOL), norm, best)
        if shape == "circle":
            _circle_corners(points, tree, tissue, size, best, near_new, upper)
        else:
            _square_corners(points, tissue, size, best, near_new, upper)
        _boundary(points, tree, tissue, shape, size, best, None if grown is None or grown.centre is None else cKDTree(new_points))
        best.center = _nicer_centre(points, tissue, shape, area_mm2, best)
    count = count_in_region(points, best.center, shape, area_mm2)
    return Hotspot(shape, area_mm2, (float(best.center[0]), float(best.center[1])), count)


class _Best:
    def __init__(self, center: np.ndarray, count: int) -> None:
        self.center, self.count = center, count

    def offer(self, centres: np.ndarray, counts: np.ndarray, tissue: TissueMap) -> None:
        """Take the best of the candidates that lie in tissue, if it beats the best so far."""
        better = counts > self.count
        if not better.any():
            return
        centres, counts = centres[better], counts[better]
        order = np.argsort(-counts, kind="stable")
        ok = tissue.contains(centres[order])
        if ok.any():
            k = order[np.argmax(ok)]
            self.center, self.count = centres[k], int(counts[k])


def _centres_on_points(points: np.ndarray, tree: cKDTree, tissue: TissueMap, reach: float, norm: float, best: _Best) -> None:
    # Not needed for exactness of squares, but a cheap, usually near-optimal first bound.
    counts = tree.query_ball_point(points, reach, p=norm, return_length=True)
    best.offer(points, np.asarray(counts), tissue)


def _circle_corners(points: np.ndarray, tree: cKDTree, tissue: TissueMap, r: float, best: _Best,
                    only: np.ndarray | None = None, upper: np.ndarray | None = None) -> None:
    """Every point where the circles of radius r around two points cross, by an angular
    sweep around each point i: a centre on i's circle at angle t holds point j while
    |t - phi_j| <= acos(d_ij / 2r). The sweep gives the count at every crossing at once."""
    if upper is None:
        bound = np.asarray(tree.query_ball_point(points, 2 * r * (1 + TOL), return_length=True))
    else:  # the points within 2r, counted only where the last search left no tighter bound
        unknown = ~np.isfinite(upper)
        upper[unknown] = tree.query_ball_point(points[unknown], 2 * r * (1 + TOL), return_length=True)
        bound = upper.copy()
    if only is not None:
        bound = np.where(only, bound, 0)
    two_pi = 2 * math.pi
    for i in np.argsort(-bound, kind="stable"):
        if bound[i] <= best.count:
            break
        near = np.asarray(tree.query_ball_point(points[i], 2 * r * (1 + TOL)), np.int64)
        d = points[near] - points[i]
        dist = np.hypot(d[:, 0], d[:, 1])
        same = dist <= r * TOL  # i itself and duplicates: held wherever the centre is on i's circle
        d, dist = d[~same], dist[~same]
        if len(d) == 0:
            if upper is not None:
                upper[i] = int(same.sum())
            continue
        phi = np.arctan2(d[:, 1], d[:, 0])
        alpha = np.arccos(np.clip(dist / (2 * r), -1.0, 1.0))
        start = np.mod(phi - alpha, two_pi)
        starts, ends = np.sort(start), np.sort(start + 2 * alpha)
        eps = TOL * 10
        # The candidates are the starts themselves; searching sorted queries is several times
        # faster than unsorted ones (memory order), and the order of candidates is immaterial.
        held = (
            np.searchsorted(starts, starts + eps, "right")
            - np.searchsorted(ends, starts - eps, "left")
            + (len(ends) - np.searchsorted(ends, starts + two_pi - eps, "left"))
        ) + int(same.sum())
        if upper is not None:
            upper[i] = held.max()
        better = held > best.count
        if better.any():
            t = starts[better]
            best.offer(points[i] + r * np.stack([np.cos(t), np.sin(t)], 1), held[better], tissue)


def _square_corners(points: np.ndarray, tissue: TissueMap, side: float, best: _Best,
                    only: np.ndarray | None = None, upper: np.ndarray | None = None) -> None:
    """Every (x_i - side/2, y_j - side/2) with |x_i - x_j|, |y_i - y_j| <= side, by a sweep
    in y over the points whose x-range covers x_i - side/2."""
    order = np.argsort(points[:, 0], kind="stable")
    xs = points[order, 0]
    eps = side * TOL
    lo = np.searchsorted(xs, xs - side - eps, "left")
    hi = np.searchsorted(xs, xs + eps, "right")
    bound = hi - lo
    if upper is not None:
        upper[order] = bound = np.minimum(bound, upper[order])
    if only is not None:
        bound = np.where(only[order], bound, 0)
    half = side / 2
    for k in np.argsort(-bound, kind="stable"):
        if bound[k] <= best.count:
            break
        ys = points[order[lo[k] : hi[k]], 1]
        y_cand = ys - half
        low, high = np.sort(ys - half), np.sort(ys + half)
        held = np.searchsorted(low, y_cand + eps, "right") - np.searchsorted(high, y_cand - eps, "left")
        if upper is not None:
            upper[order[k]] = held.max()
        centres = np.stack([np.full(len(ys), xs[k] - half), y_cand], 1)
        best.offer(centres, held, tissue)


def _boundary(points: np.ndarray, tree: cKDTree, tissue: TissueMap, shape: str, size: float, best: _Best, new: cKDTree | None = None) -> None:
    """The best centre on each tissue boundary segment (see the module's docstring)."""
    horizontal, vertical = tissue.boundary()
    for segments, axis in ((horizontal, 0), (vertical, 1)):
        if not len(segments):
            continue
        # (line, start, end) -> midpoints in (x, y); a point within reach of the segment
        # lies within reach + half its length of the midpoint.
        along = (segments[:, 1] + segments[:, 2]) / 2
        mids = np.stack([along, segments[:, 0]], 1) if axis == 0 else np.stack([segments[:, 0], along], 1)
        half_len = (segments[:, 2] - segments[:, 1]) / 2
        if shape == "circle":
            reach, norm = size + half_len, 2
        else:
            reach, norm = size / 2 + half_len, np.inf
        bound = np.asarray(tree.query_ball_point(mids, reach * (1 + TOL), p=norm, return_length=True))
        if new is not None:  # only segments within reach of a new point
            bound[np.asarray(new.query_ball_point(mids, reach * (1 + TOL), p=norm, return_length=True)) == 0] = 0
        for s in np.argsort(-bound, kind="stable"):
            if bound[s] <= best.count:
                break
            near = np.asarray(tree.query_ball_point(mids[s], reach[s] * (1 + TOL), p=norm), np.int64)
            line, start, end = segments[s]
            across = points[near, 1 - axis] - line  # distance of each point from the line
            at = points[near, axis]
            if shape == "circle":
                half = np.sqrt(np.maximum(size**2 - across**2, 0.0))
                ok = np.abs(across) <= size * (1 + TOL)
            else:
                half = np.full(len(near), size / 2)
                ok = np.abs(across) <= size / 2 * (1 + TOL)
            low, high = np.maximum(at[ok] - half[ok], start), np.minimum(at[ok] + half[ok], end)
            eps = size * TOL
            keep = low <= high + eps
            low, high = low[keep], np.maximum(high[keep], low[keep])
            if not len(low):
                continue
            lows, highs = np.sort(low), np.sort(high)
            held = np.searchsorted(lows, low + eps, "right") - np.searchsorted(highs, low - eps, "left")
            centres = np.stack([low, np.full(len(low), line)], 1) if axis == 0 else np.stack([np.full(len(low), line), low], 1)
            best.offer(centres, held, tissue)


def _nicer_centre(points: np.ndarray, tissue: TissueMap, shape: str, area_mm2: float, best: _Best) -> np.ndarray:
    """An optimal centre found above has figures on the region's edge. For the picture, the
    centroid of the figures held is preferred when it lies in tissue and holds as many."""
    center = np.asarray(best.center, float)
    held = points[held_mask(points, center, shape, area_mm2)]
    if len(held):
        centroid = held.mean(0)
        if tissue.contains(centroid)[0] and count_in_region(points, centroid, shape, area_mm2) >= best.count:
            return centroid
    return center



class Growing:
    """Exact hotspots of a set that grows: `search(keep)` for masks of `points` that only
    ever add points (the review slider's figures as the threshold falls). Each search starts
    from the last one's hotspot and bounds (see the module's docstring)."""

    def __init__(self, points: np.ndarray, tissue: TissueMap, shape: str, area_mm2: float) -> None:
        self.points, self.tissue, self.shape, self.area_mm2 = np.asarray(points, float).reshape(-1, 2), tissue, shape, area_mm2
        self.keep = np.zeros(len(self.points), bool)
        self.upper = np.full(len(self.points), np.inf)
        self.centre: tuple[float, float] | None = None

    def search(self, keep: np.ndarray) -> Hotspot:
        from scipy.spatial import cKDTree

        keep = np.asarray(keep, bool)
        if (self.keep & ~keep).any():
            raise ValueError("a growing set lost points")
        new = keep & ~self.keep
        if self.centre is not None:
            size = region_size(self.shape, self.area_mm2)
            old = np.flatnonzero(self.keep)
            if new.any() and len(old):  # old points' bounds rise by the new points that can join their corners
                if self.shape == "circle":
                    joining = cKDTree(self.points[new]).query_ball_point(self.points[old], 2 * size * (1 + TOL), return_length=True)
                else:  # every corner of point k lies at x_k - side/2: new points in [x_k - side, x_k] may join
                    xs = np.sort(self.points[new, 0])
                    x = self.points[old, 0]
                    joining = np.searchsorted(xs, x + size * TOL, "right") - np.searchsorted(xs, x - size * (1 + TOL), "left")
                self.upper[old] += joining
        grown = _Grown(new[keep], self.centre, self.upper[keep])
        spot = find_hotspot(self.points[keep], self.tissue, self.shape, self.area_mm2, grown)
        self.upper[keep] = grown.upper
        self.keep, self.centre = keep, spot.center_mm
        return spot
