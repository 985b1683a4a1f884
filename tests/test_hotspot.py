"""The hotspot search is exact: it matches a brute force built on a different argument.

The brute force evaluates every "extreme point" a feasible set of centres can have. For a
set S, the centres holding all of S and lying in one tissue cell form a convex set whose
lexicographically smallest point is one of: a crossing of two circles, a crossing of a
circle with a cell edge, a cell corner, or the leftmost point of one circle (for squares:
a combination of one x and one y from the squares' and cells' edges). Counting at all of
them, directly by distance, gives the true maximum.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from midog.results.hotspot import Growing, TissueMap, count_in_region, find_hotspot, region_size


def cell_edges(tissue: TissueMap) -> tuple[np.ndarray, np.ndarray]:
    rows, cols = tissue.mask.shape
    xs = np.minimum(np.arange(cols + 1) * tissue.cell_mm[0], tissue.extent_mm[0])
    ys = np.minimum(np.arange(rows + 1) * tissue.cell_mm[1], tissue.extent_mm[1])
    return xs, ys


def brute_force(points: np.ndarray, tissue: TissueMap, shape: str, area: float) -> int:
    size = region_size(shape, area)
    xs, ys = cell_edges(tissue)
    cands = []
    if shape == "square":
        half = size / 2
        cx = np.concatenate([points[:, 0] - half, points[:, 0] + half, xs])
        cy = np.concatenate([points[:, 1] - half, points[:, 1] + half, ys])
        cands = np.array(list(itertools.product(cx, cy)))
    else:
        r = size
        cands.extend(points)
        cands.extend(points - [r, 0])
        cands.extend(itertools.product(xs, ys))
        for p, q in itertools.combinations(points, 2):
            d = np.linalg.norm(q - p)
            if 0 < d <= 2 * r:
                mid, h = (p + q) / 2, math.sqrt(max(r * r - d * d / 4, 0))
                n = np.array([-(q - p)[1], (q - p)[0]]) / d
                cands.extend([mid + h * n, mid - h * n])
        for p in points:
            for x in xs:  # vertical cell edges
                if abs(x - p[0]) <= r:
                    h = math.sqrt(r * r - (x - p[0]) ** 2)
                    cands.extend([(x, p[1] + h), (x, p[1] - h)])
            for y in ys:
                if abs(y - p[1]) <= r:
                    h = math.sqrt(r * r - (y - p[1]) ** 2)
                    cands.extend([(p[0] + h, y), (p[0] - h, y)])
        cands = np.array(cands, float)
    cands = cands[tissue.contains(cands)]
    return max((count_in_region(points, c, shape, area) for c in cands), default=0)


def check(points: np.ndarray, tissue: TissueMap, shape: str, area: float) -> None:
    spot = find_hotspot(points, tissue, shape, area)
    assert spot.count == brute_force(points, tissue, shape, area)
    # The reported centre is in tissue and its region holds the reported count.
    assert tissue.contains(np.array(spot.center_mm))[0]
    assert count_in_region(points, np.array(spot.center_mm), shape, area) == spot.count


@pytest.mark.parametrize("shape", ["circle", "square"])
@pytest.mark.parametrize("seed", range(12))
def test_random_sets_with_tissue_holes_match_brute_force(seed, shape):
    rng = np.random.default_rng(seed)
    mask = rng.random((6, 8)) < 0.55  # patchy tissue: the boundary matters
    mask[rng.integers(6), rng.integers(8)] = True
    tissue = TissueMap(mask, (0.5, 0.4), (3.8, 2.3))  # last row and column clipped
    n = int(rng.integers(1, 30))
    # Clustered and spread points, some outside the tissue and at the image edges.
    points = np.concatenate([rng.normal([2, 1.2], 0.4, (n, 2)), rng.uniform(0, [3.8, 2.3], (n // 2, 2))])
    points[: n // 4, 0] = 0.0
    check(points, tissue, shape, float(rng.uniform(0.2, 2.0)))


@pytest.mark.parametrize("shape", ["circle", "square"])
def test_ties_and_points_exactly_one_diameter_apart(shape):
    tissue = TissueMap.everywhere((10.0, 10.0))
    area = math.pi if shape == "circle" else 4.0  # radius 1 / side 2
    # A grid with spacing 2: pairs exactly 2r (circle) or one side (square) apart, many ties.
    points = np.array([(x, y) for x in (3.0, 5.0, 7.0) for y in (3.0, 5.0)], float)
    check(points, tissue, shape, area)
    points = np.concatenate([points, points[:2]])  # duplicates count twice
    check(points, tissue, shape, area)


@pytest.mark.parametrize("shape", ["circle", "square"])
def test_centre_must_stay_in_tissue(shape):
    # Tissue only in the left half: the dense cluster on glass on the right cannot be the
    # centre, but a region centred on the tissue edge reaches part of it.
    mask = np.zeros((4, 4), bool)
    mask[:, :2] = True
    tissue = TissueMap(mask, (1.0, 1.0), (4.0, 4.0))
    points = np.array([[3.5, 2.0]] * 5 + [[2.4, 2.0]] * 2 + [[0.5, 0.5]] * 3, float)
    area = math.pi * 0.5**2 if shape == "circle" else 1.0
    spot = find_hotspot(points, tissue, shape, area)
    assert spot.count == 3  # the 3 inside the tissue; the 2 at x = 2.4 are 0.4 from the edge
    check(points, tissue, shape, area)
    spot = find_hotspot(points, tissue, shape, math.pi * 0.45**2 if shape == "circle" else 0.81)
    assert spot.count == 3


def test_no_tissue_no_points():
    empty = TissueMap(np.zeros((2, 2), bool), (1.0, 1.0), (2.0, 2.0))
    assert find_hotspot(np.array([[0.5, 0.5]]), empty).center_mm is None
    spot = find_hotspot(np.zeros((0, 2)), TissueMap.everywhere((2.0, 2.0)))
    assert spot.count == 0 and spot.center_mm is not None


def test_area_and_boundary_of_a_clipped_mask():
    mask = np.array([[1, 1, 0], [0, 1, 1]], bool)
    tissue = TissueMap(mask, (1.0, 1.0), (2.5, 2.0))
    assert tissue.area_mm2() == pytest.approx(1 + 1 + 1 + 0.5)
    horizontal, vertical = tissue.boundary()
    # Perimeter: horizontal edges 2 (top) + 1 + 0.5 (between rows) + 1.5 (bottom), vertical 4 x 1.
    assert (horizontal[:, 2] - horizontal[:, 1]).sum() == pytest.approx(5.0)
    assert (vertical[:, 2] - vertical[:, 1]).sum() == pytest.approx(4.0)


@pytest.mark.parametrize("shape", ["circle", "square"])
def test_5000_points_exact(shape):
    """A slide-like set: background figures everywhere, two hotspots; the result equals a
    direct count, and no placement found by a fine local search around it does better."""
    rng = np.random.default_rng(5)
    extent = (20.0, 15.0)
    pts = [rng.uniform(0, extent, (4200, 2)), rng.normal([5, 5], 0.5, (500, 2)), rng.normal([14, 10], 0.4, (300, 2))]
    points = np.clip(np.concatenate(pts), 0, extent)
    mask = np.ones((30, 40), bool)
    mask[:, 28:] = False  # no tissue right of x = 14: the second cluster is half off-limits
    tissue = TissueMap(mask, (0.5, 0.5), extent)
    spot = find_hotspot(points, tissue, shape, 2.0)
    c = np.array(spot.center_mm)
    assert tissue.contains(c)[0] and count_in_region(points, c, shape, 2.0) == spot.count
    # Local search around every figure near the best cluster: nothing beats the maximum.
    grid = np.stack(np.meshgrid(np.linspace(3, 7, 81), np.linspace(3, 7, 81)), -1).reshape(-1, 2)
    grid = np.concatenate([grid, np.stack(np.meshgrid(np.linspace(12, 14, 41), np.linspace(8, 12, 81)), -1).reshape(-1, 2)])
    grid = grid[tissue.contains(grid)]
    from scipy.spatial import cKDTree

    tree = cKDTree(points)
    size = region_size(shape, 2.0)
    local = tree.query_ball_point(grid, size if shape == "circle" else size / 2, p=2 if shape == "circle" else np.inf, return_length=True)
    assert spot.count >= local.max()


@pytest.mark.parametrize("shape", ["circle", "square"])
@pytest.mark.parametrize("seed", range(8))
def test_grown_sets_match_the_search_from_nothing(seed, shape):
    """The review slider's search: the points of a falling threshold, each set searched from
    the last one's hotspot, only where the new points can change it; every count equals the
    brute force and the search from nothing."""
    rng = np.random.default_rng(100 + seed)
    mask = rng.random((6, 8)) < 0.6
    mask[rng.integers(6), rng.integers(8)] = True
    tissue = TissueMap(mask, (0.5, 0.4), (3.8, 2.3))
    n = int(rng.integers(5, 40))
    points = np.concatenate([rng.normal([2, 1.2], 0.5, (n, 2)), rng.uniform(0, [3.8, 2.3], (n // 2, 2))])
    scores = rng.random(len(points))
    area = float(rng.uniform(0.2, 1.5))
    growing = Growing(points, tissue, shape, area)
    for t in (0.9, 0.75, 0.6, 0.6, 0.45, 0.3, 0.1, 0.0):
        keep = scores > t
        spot = growing.search(keep)
        assert spot.count == find_hotspot(points[keep], tissue, shape, area).count == brute_force(points[keep], tissue, shape, area)
        assert tissue.contains(np.array(spot.center_mm))[0] and count_in_region(points[keep], np.array(spot.center_mm), shape, area) == spot.count
    with pytest.raises(ValueError, match="lost points"):
        growing.search(scores > 0.5)
