"""Seconds to find the exact hotspot among 5 000 mitotic figures (issue 13's speed goal).

    python benchmarks/count.py [--points 5000] [--repeat 3]

Three slide-like layouts: figures spread over 300 mm² of patchy tissue with two hotspots;
all figures in one 4 mm² cluster (every pair is a candidate: the worst case for the circle
search); and a tissue mask at thumbnail resolution (2048 px) with many holes. Each is run
for circles and squares of 2 mm². Prints the best of --repeat runs (wall and CPU seconds) and the counts found.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
from scipy import ndimage

from midog.results.hotspot import TissueMap, find_hotspot


def layouts(n: int, rng: np.random.Generator) -> dict[str, tuple[np.ndarray, TissueMap]]:
    extent = (20.0, 15.0)
    # Patchy tissue at thumbnail resolution: smoothed noise, thresholded (holes and islands).
    noise = ndimage.gaussian_filter(rng.random((1536, 2048)), 12)
    patchy = TissueMap(noise > np.quantile(noise, 0.4), (extent[0] / 2048, extent[1] / 1536), extent)
    spread = np.concatenate([rng.uniform(0, extent, (n - 800, 2)), rng.normal([6, 5], 0.5, (500, 2)), rng.normal([14, 10], 0.4, (300, 2))])
    spread = np.clip(spread, 0, extent)
    cluster = np.clip(rng.normal([10, 7], 0.6, (n, 2)), 0, extent)
    full = TissueMap.everywhere(extent)
    return {"spread, patchy tissue": (spread, patchy), "one dense cluster, all tissue": (cluster, full), "one dense cluster, patchy tissue": (cluster, patchy)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print(f"{args.points} points, {os.cpu_count()} CPUs, best of {args.repeat}")
    for name, (points, tissue) in layouts(args.points, np.random.default_rng(0)).items():
        for shape in ("circle", "square"):
            times, cpu = [], []
            for _ in range(args.repeat):
                start, start_cpu = time.perf_counter(), time.process_time()
                spot = find_hotspot(points, tissue, shape, 2.0)
                times.append(time.perf_counter() - start)
                cpu.append(time.process_time() - start_cpu)
            # CPU seconds too: on a shared machine wall time includes waiting for a core.
            print(f"{name:34s} {shape:6s} {min(times):6.2f} s wall {min(cpu):6.2f} s CPU  hotspot count {spot.count}")


if __name__ == "__main__":
    main()
