"""process.py on a large whole slide under a hard memory ceiling, as a platform sets one.

    python benchmarks/memory_ceiling.py [--size 50000] [--limit 4G] [--mode rlimit|cgroup] [--json OUT]

Makes a pyramidal JPEG slide of --size x --size px with midog.synth.slide.make_slide (cached in
benchmarks/.cache/ceiling/), puts it in an input folder between two small region TIFFs,
and runs process.py on the CPU with the demo weights under the limit:

- rlimit: RLIMIT_AS (address space, `prlimit --as`): an allocation past it fails, which
  Python raises as MemoryError: the image is refused with "out of memory" and the run goes
  on. PyTorch's CUDA build maps about 3.1 GB of address space at import, so the margin
  left under 4 GiB is under 1 GB.
- cgroup: a cgroup (v1 memory.limit_in_bytes, or v2 memory.max) holding the run, as a
  container's memory limit does: resident memory counts, and past it the kernel kills the
  process (no Python error); results.json written before stays.

Prints and records: exit status, wall seconds, peak resident MB (the child's ru_maxrss, or
the cgroup's own peak), and each image's outcome from results.json.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CACHE = HERE / ".cache" / "ceiling"
WEIGHTS = ROOT / "weights" / "demo-synthetic.pth"


def size_bytes(text: str) -> int:
    units = {"K": 2**10, "M": 2**20, "G": 2**30}
    return int(float(text[:-1]) * units[text[-1].upper()]) if text[-1].upper() in units else int(text)


def make_inputs(size: int) -> Path:
    import numpy as np
    import tifffile

    from midog.synth.slide import make_slide

    CACHE.mkdir(parents=True, exist_ok=True)
    slide = CACHE / f"slide{size}.tiff"
    if not slide.exists():
        started = time.perf_counter()
        make_slide(slide, size, size, seed=0, n_regions=4, region_size=2048, tile=512, levels=4)
        print(f"made {slide} ({slide.stat().st_size / 2**20:.0f} MB) in {time.perf_counter() - started:.0f} s", flush=True)
    folder = CACHE / f"input{size}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    os.link(slide, folder / f"b_slide{size}.tiff")  # not a symbolic link: process.py refuses links out of its input
    rng = np.random.default_rng(0)
    for name in ("a_region.tiff", "c_region.tiff"):
        tifffile.imwrite(folder / name, rng.integers(0, 255, (600, 600, 3), dtype=np.uint8), photometric="rgb",
                         resolution=(40000, 40000), resolutionunit="CENTIMETER")
    return folder


def cgroup_dir() -> tuple[Path, str, str] | None:
    """(a new cgroup, its limit file, its peak file), v1 or v2, when this process may make one."""
    for base, limit, peak in ((Path("/sys/fs/cgroup/memory"), "memory.limit_in_bytes", "memory.max_usage_in_bytes"),
                              (Path("/sys/fs/cgroup"), "memory.max", "memory.peak")):
        if (base / limit).exists() or (base / "cgroup.controllers").exists():
            group = base / f"midog-ceiling-{os.getpid()}"
            try:
                group.mkdir()
            except OSError:
                continue
            return group, limit, peak
    return None


def run(folder: Path, limit: int, mode: str) -> dict:
    out = CACHE / "output"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    env = dict(os.environ, PYTHONPATH=str(ROOT), CUDA_VISIBLE_DEVICES="", MIDOG_VERBOSE="1")
    command = [sys.executable, str(ROOT / "process.py"), "--input", str(folder), "--output", str(out), "--weights", str(WEIGHTS), "--device", "cpu"]
    group = None
    if mode == "rlimit":
        def preexec() -> None:
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    else:
        group = cgroup_dir()
        if group is None:
            raise SystemExit("no cgroup can be made here (needs a writable memory controller)")
        (group[0] / group[1]).write_text(str(limit))
        if (group[0] / "memory.memsw.limit_in_bytes").exists():  # no swap either (v1)
            try:
                (group[0] / "memory.memsw.limit_in_bytes").write_text(str(limit))
            except OSError:
                pass

        def preexec() -> None:
            (group[0] / "cgroup.procs").write_text(str(os.getpid()))

    started = time.perf_counter()
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, preexec_fn=preexec)
    log, _ = proc.communicate()
    seconds = time.perf_counter() - started
    status = proc.returncode
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # the one child's peak, in MB
    if group is not None:
        peak_file = group[0] / group[2]
        if peak_file.exists():
            peak_mb = int(peak_file.read_text()) / 2**20
        group[0].rmdir()
    cases_file = out / "results.json"
    cases = json.loads(cases_file.read_text()) if cases_file.exists() else None
    outcome = {}
    for case in cases or []:
        name = Path(str(case.get("filename") or case.get("path") or "?")).name
        points = case.get("mitotic-figures")
        outcome[name] = f"error: {case['error']}" if case.get("error") else f"ok ({len((points or {}).get('points', []))} points)"
    return {"mode": mode, "limit_gib": limit / 2**30, "exit_status": status, "seconds": round(seconds, 1), "peak_rss_mb": round(peak_mb),
            "images": outcome, "log_tail": log.strip().splitlines()[-8:]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=50_000, help="slide width and height in px (default 50000)")
    parser.add_argument("--limit", default="4G", help="the ceiling: bytes, or with K/M/G (default 4G)")
    parser.add_argument("--mode", choices=("rlimit", "cgroup"), default="rlimit", help="RLIMIT_AS (default) or a cgroup memory limit")
    parser.add_argument("--json", type=Path, help="append the figures to this JSON list")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    folder = make_inputs(args.size)
    result = {"size": args.size, **run(folder, size_bytes(args.limit), args.mode)}
    print(json.dumps(result, indent=1))
    if args.json:
        previous = json.loads(args.json.read_text()) if args.json.exists() else []
        args.json.write_text(json.dumps(previous + [result], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
