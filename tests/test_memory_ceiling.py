"""process.py under a hard address-space ceiling (RLIMIT_AS), as a platform's memory limit
cuts an allocation short (issue 30; the 50 000 px slide measurements are in BENCHMARKS.md, made
with benchmarks/memory_ceiling.py). An image that needs more than is left is refused with a
clear "out of memory" error naming it; the images before and after it still get results."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import tifffile

ROOT = Path(__file__).resolve().parent.parent

# The ceiling is set once everything is imported: 1 GiB above what the process has mapped
# then (PyTorch's CUDA build alone maps ~3 GB of address space at import), enough for the
# detector and small images, not for a 20 000 x 20 000 PNG decoded whole (1.2 GB).
SCRIPT = """
import re, resource, sys
sys.path.insert(0, sys.argv[1])
import process
import torch, torchvision  # the ceiling counts from where a run stands once its libraries are mapped
size = int(re.search(r"VmSize:\\s+(\\d+)", open("/proc/self/status").read()).group(1)) * 1024
resource.setrlimit(resource.RLIMIT_AS, (size + 2**30, size + 2**30))
sys.exit(process.main(sys.argv[2:]))
"""


def test_an_image_past_the_ceiling_is_refused_and_the_others_kept(tmp_path: Path) -> None:
    import SimpleITK as sitk

    folder, out = tmp_path / "in", tmp_path / "out"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a_small.tiff", "c_small.tiff"):
        tifffile.imwrite(folder / name, rng.integers(0, 255, (600, 600, 3), dtype=np.uint8), photometric="rgb",
                         resolution=(40000, 40000), resolutionunit="CENTIMETER")
    big = sitk.GetImageFromArray(np.full((20000, 20000, 3), 200, np.uint8), isVector=True)  # compresses to ~2 MB
    big.SetSpacing((0.00025, 0.00025))
    sitk.WriteImage(big, str(folder / "b_big.png"))
    del big
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(ROOT), "--input", str(folder), "--output", str(out),
                           "--weights", str(ROOT / "weights" / "demo-synthetic.pth"), "--device", "cpu"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stderr[-3000:]
    cases = {Path(c["filename"]).name: c for c in json.loads((out / "results.json").read_text())}
    assert set(cases) == {"a_small.tiff", "b_big.png", "c_small.tiff"}
    assert cases["a_small.tiff"]["mitotic-figures"] is not None and cases["c_small.tiff"]["mitotic-figures"] is not None
    error = cases["b_big.png"]["error"]
    assert "b_big.png" in error and "out of memory" in error and "damaged" not in error, error
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
