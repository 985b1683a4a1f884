"""Correctness of OpenSlide 4 and wsidicom on a TILED_SPARSE series (only the tissue frames
stored) and on one split across two files, against the TILED_FULL series they were made
from. Usage: python benchmarks/dicom_sparse.py FULL_DIR SPARSE_DIR [SPLIT_DIR ...]."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np


def readers(folder: str):
    import openslide
    from wsidicom import WsiDicom

    out = {}
    try:
        osl = openslide.OpenSlide(str(sorted(Path(folder).glob("*.dcm"))[0]))
        out["openslide"] = lambda x, y, s: np.asarray(osl.read_region((x, y), 0, (s, s)))
    except Exception as exc:  # report what the reader says, then go on with the other
        print(f"  openslide cannot open {folder}: {type(exc).__name__}: {exc}")
    try:
        wsi = WsiDicom.open(folder)
        out["wsidicom"] = lambda x, y, s: np.asarray(wsi.read_region((x, y), 0, (s, s)).convert("RGBA"))
    except Exception as exc:
        print(f"  wsidicom cannot open {folder}: {type(exc).__name__}: {exc}")
    return out


def main(full: str, *others: str) -> None:
    reference = readers(full)["wsidicom"]
    from wsidicom import WsiDicom

    size_ = WsiDicom.open(full).size
    width, height = size_.width, size_.height
    size = 512
    for folder in others:
        print(folder)
        for name, read in readers(folder).items():
            worst_tissue, blank_values, n = 0, set(), 0
            for y in range(0, height - size + 1, size):
                for x in range(0, width - size + 1, size):
                    ref, got = reference(x, y, size), read(x, y, size)
                    if ref[..., :3].std() < 4:  # glass: a frame the sparse series may lack
                        blank_values.add(tuple(int(v) for v in got.reshape(-1, 4).min(0)))
                    else:
                        worst_tissue = max(worst_tissue, int(np.abs(ref[..., :3].astype(int) - got[..., :3].astype(int)).max()))
                    n += 1
            print(f"  {name:9s} {n} tiles: tissue max |difference| {worst_tissue}; glass tiles read as RGBA minima {sorted(blank_values)[:3]}")


if __name__ == "__main__":
    main(*sys.argv[1:])
