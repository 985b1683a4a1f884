"""The review page's slider hotspots (issue 26): 100 thresholds over 3000 candidates on a
30 000 x 20 000 px slide's worth of tissue (7.5 x 5 mm at 0.25 um, an elliptic section),
2 mm² circles; each distinct set searched from nothing, and grown from the last one's
search (`hotspot.Growing`, what `midog review` runs). Prints seconds and every tenth count.

    PYTHONPATH=. python benchmarks/slider_hotspots.py [circle|square] [grown] [scratch]
"""

from __future__ import annotations

import sys
import time

import numpy as np

from midog.results.hotspot import Growing, TissueMap, find_hotspot

rng = np.random.default_rng(0)
extent = (7.5, 5.0)
mask = np.zeros((500, 750), bool)
yy, xx = np.mgrid[0:500, 0:750]
mask[((xx - 375) / 330) ** 2 + ((yy - 250) / 220) ** 2 <= 1] = True
tissue = TissueMap(mask, (0.01, 0.01), extent)
pts = np.concatenate([rng.uniform([0.5, 0.5], [7.0, 4.5], (2400, 2)), rng.normal([2.5, 2.0], 0.35, (400, 2)), rng.normal([5.0, 3.0], 0.3, (200, 2))])
scores = rng.random(len(pts)) ** 0.7
shape = sys.argv[1] if len(sys.argv) > 1 else "circle"
for mode in sys.argv[2:] or ["grown", "scratch"]:
    t0 = time.time()
    growing = Growing(pts, tissue, shape, 2.0)
    counts: list[int] = []
    seen: dict[int, int] = {}
    for t in [round(i * 0.01, 2) for i in range(99, -1, -1)]:
        keep = (scores > t) & tissue.contains(pts)
        n = int(keep.sum())
        if n not in seen:
            spot = growing.search(keep) if mode == "grown" else find_hotspot(pts[keep], tissue, shape, 2.0)
            seen[n] = spot.count
        counts.append(seen[n])
    print(mode, shape, f"{time.time() - t0:.1f} s", counts[::10], flush=True)
