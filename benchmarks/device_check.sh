#!/usr/bin/env bash
# Every GPU check of one lent GPU session, in one run (figures go to BENCHMARKS.md):
#   1. inputs for benchmarks/run.py, made there (too big to carry);
#   2. benchmarks/run.py on the GPU: baseline, exact, fast; seconds per 7215 x 5412 image
#      after start-up, model-alone MP/s, fast-mode agreement;
#   3. the parity and mode tests with the network on the GPU (MIDOG_TEST_DEVICE=cuda), and the
#      host-feed tests' CUDA ones (three streams bit-identical to one; GPU JPEG decoding);
#   4. GPU batch sizes, end to end and model alone;
#   5. the torch.compile modes, which are the slowest to start;
#   6. a short domain-adversarial training run on the GPU (mixed precision), for epoch time;
#   7. the host side (benchmarks/host.py) with the stand-in network and post-processing on
#      CUDA, then restricted to 4 CPUs (the platform's T4 instance);
#   8. fast mode end to end on the 7215 x 5412 region (strip TIFF, and as JPEG tiles with GPU
#      decoding on and off) and on the 50 000 x 50 000 slide's tissue, with GPU and host
#      utilisation and the agreement of GPU-decoded detections with CPU-decoded ones.
# The GPU machines have PyTorch but not our readers: wheels for those go in .whl/ and a copy
# of ../shared in .devshared/ (both ignored by git), carried with the call. The call may
# carry 64 MiB in all, so weights/demo-synthetic.pth stays behind (move it aside for the
# call) and the figures use the reference-vector weights (the many-candidates stress case):
#   bash benchmarks/device_check.sh [STEP...]   (run by the device tool, carry [".whl", ".devshared"])
# STEPs: benchmark parity batches compiled training host feed (default: all, in that order).
# A session short of time runs the feeding steps alone (about 8 minutes):
#   HOST_THREADS=1,4,8,16 bash benchmarks/device_check.sh parity host feed
set -euo pipefail
steps=" ${*:-benchmark parity batches compiled training host feed} "
want() { [[ $steps == *" $1 "* ]]; }
out=${OUT:-/tmp/device-check}
mkdir -p "$out"
exec > >(tee "$out/log.txt") 2>&1
export PYTHONUNBUFFERED=1
step() { echo "== $1 ($(date +%T), ${SECONDS}s)"; }
# A failed or timed-out step is reported and the session goes on to the next one.
failed() { echo "== $1 FAILED (status $?)"; }

if [ -d .whl ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
fi
export PYTHONPATH=/tmp/site:$PWD
[ -e ../shared ] || ln -s "$PWD/.devshared" ../shared
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, torchvision, tiffslide; print('torch', torch.__version__, 'torchvision', torchvision.__version__, torch.cuda.get_device_name(0))"

step inputs
if want feed; then  # the 50 000 px slide takes minutes to make: in the background, from the start
    (timeout 400 python3 -c "import sys; sys.path.insert(0, 'benchmarks'); import run; run.prepare_slide()" >"$out/slide.log" 2>&1) &
    slide_job=$!
fi
timeout 200 python3 -c "import sys; sys.path.insert(0, 'benchmarks'); import run; run.prepare(slide=False)" || exit 1

if want benchmark; then
    step benchmark
    timeout 240 python3 benchmarks/run.py --device cuda --rounds 1 --weights vectors --modes exact,fast --skip-slide ${BENCH_ARGS:+"$BENCH_ARGS"} || failed benchmark
fi

if want parity; then
    step "parity on the GPU"
    MIDOG_TEST_DEVICE=cuda timeout 200 python3 -m pytest -q -p no:cacheprovider -W ignore::UserWarning \
        tests/test_parity.py tests/test_modes.py tests/test_host_feed.py -k "not compiled" -rs 2>&1 | tail -8 || failed parity
fi

if want batches; then
    step "batch sizes"
    timeout 120 python3 - <<'EOF' || failed "batch sizes"
import time, torch
from benchmarks.run import REGION, VECTOR_WEIGHTS as WEIGHTS, model_mps
from midog.detector import Detector
print("mode   batch  end-to-end s  model MP/s")
for fast in (False, True):
    for bs in (16, 32, 128):
        d = Detector.from_weights(WEIGHTS, "cuda", fast=fast, batch_size=bs)
        d.detect(REGION)
        torch.cuda.synchronize(); t = time.perf_counter(); d.detect(REGION); e2e = time.perf_counter() - t
        model = model_mps(d._forward, bs, "cuda", repeats=10)
        print(f"{'fast' if fast else 'exact':6s} {bs:5d}  {e2e:12.2f}  {model:10.0f}", flush=True)
EOF
fi

if want compiled; then
    step "compiled modes"
    timeout 150 python3 benchmarks/run.py --device cuda --rounds 1 --weights vectors --modes exact+compile,fast+compile --skip-slide --skip-vectors || failed "compiled modes"
fi
if want training; then
    step "training on the GPU (one epoch; the \"patches/s\" line is the figure to record)"
    # evalutils (the validation scorer) imports SimpleITK, which is too big to carry and
    # unused by the scorer: an empty stand-in satisfies the import for this step only.
    mkdir -p /tmp/stub
    python3 -c "import SimpleITK" 2>/dev/null || printf 'class Image:\n    pass\ndef ReadImage(*a):\n    raise ImportError("stand-in")\nGetArrayFromImage = ReadImage\n' >/tmp/stub/SimpleITK.py
    if timeout 60 python3 -m midog synth /tmp/train --seed 0 --images-per-scanner 3 --size 1024x1024 >/dev/null; then
        PYTHONPATH=/tmp/stub:$PYTHONPATH timeout 100 python3 -m midog train /tmp/train/MIDOG.json --out /tmp/train/run \
            --backbone none --epochs 1 --train-patches 300 --val-patches 30 --val-per-scanner 1 --amp auto \
            --device cuda --no-progress 2>&1 | tail -25 || failed training
    else
        failed "training data"
    fi
fi
if want host; then
    step "host side, stand-in network on CUDA (benchmarks/host.py), then on 4 CPUs"
    timeout 240 python3 benchmarks/host.py --device cuda --threads "${HOST_THREADS:-1,4,8,16}" --repeats 2 || failed host
    timeout 150 python3 benchmarks/host.py --device cuda --cpus 4 --threads 4 --repeats 2 || failed "host on 4 CPUs"
fi

if want feed; then
    step "fast mode end to end: strip TIFF, JPEG tiles with GPU decoding on/off, the 50 000 px slide's tissue"
    timeout 200 python3 -c "import sys; sys.path.insert(0, 'benchmarks'); import host; host.make_jpeg_slide()" || failed "JPEG slide"
    wait "$slide_job" || { cat "$out/slide.log"; failed "50 000 px slide"; }
    timeout 200 python3 - <<'EOF' || failed feed
import os, subprocess, sys, time
import numpy as np, torch
sys.path.insert(0, "benchmarks")
from run import REGION, SLIDE, VECTOR_WEIGHTS, model_mps
from host import JPEG_SLIDE
from midog.detector import Detector
from midog.slides import gpu_jpeg

print("GPU JPEG decoder:", (gpu_jpeg.pick_decoder(torch.device("cuda")) or ("none",))[0])
d = Detector.from_weights(VECTOR_WEIGHTS, "cuda", fast=True)
net = model_mps(d._forward, d.batch_size, "cuda", repeats=10)
print(f"network alone (fast, batch {d.batch_size}): {net:.0f} MP/s")
cores = len(os.sched_getaffinity(0))

def timed(image, **kw):
    d.detect(image, **kw)  # warm-up
    smi = subprocess.Popen(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits", "-lms", "50"], stdout=subprocess.PIPE, text=True)
    torch.cuda.synchronize()
    cpu, t = time.process_time(), time.perf_counter()
    det = d.detect(image, **kw)
    torch.cuda.synchronize()
    wall, cpu = time.perf_counter() - t, time.process_time() - cpu
    smi.terminate()
    gpu = [float(v) for v in smi.communicate()[0].split()]
    return det, wall, f"GPU busy {np.mean(gpu) if gpu else float('nan'):.0f}% (nvidia-smi, 50 ms), host {100 * cpu / wall / cores:.0f}% of {cores} cores"

def points(det):
    b = det.boxes[det.scores > d.threshold].astype(float)
    return np.stack([(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2], 1)

mp = 7215 * 5412 / 1e6
runs = {}
default_workers = d.workers
for name, image, gpu_decode, workers in (("strip TIFF", REGION, True, default_workers), (f"strip TIFF, {cores} readers", REGION, True, cores),
                                         ("JPEG tiles, CPU decode", JPEG_SLIDE, False, default_workers), ("JPEG tiles, GPU decode", JPEG_SLIDE, True, default_workers)):
    d.gpu_decode, d.workers = gpu_decode, workers
    det, wall, use = timed(image, tissue_only=False)
    runs[name] = det
    print(f"{name:24s} {wall:6.3f} s  {mp / wall:6.0f} MP/s = {mp / wall / net:.2f} of the network alone; {use}; {len(det)} candidates", flush=True)
d.workers = default_workers
if (gpu_jpeg.pick_decoder(torch.device("cuda")) or ("none",))[0] == "nvimgcodec":  # the other GPU decoder, for comparison
    saved = gpu_jpeg.nvimgcodec_decoder
    gpu_jpeg.nvimgcodec_decoder = lambda device: None
    det, wall, use = timed(JPEG_SLIDE, tissue_only=False)
    gpu_jpeg.nvimgcodec_decoder = saved
    print(f"{'JPEG tiles, torchvision':24s} {wall:6.3f} s  {mp / wall:6.0f} MP/s = {mp / wall / net:.2f} of the network alone; {use}; {len(det)} candidates", flush=True)
cpu_p, gpu_p = points(runs["JPEG tiles, CPU decode"]), points(runs["JPEG tiles, GPU decode"])
radius = 0.0075 / runs["JPEG tiles, CPU decode"].spacing_mm[0]
near = sum(bool(len(gpu_p)) and np.hypot(*(gpu_p - p).T).min() <= radius for p in cpu_p)
print(f"GPU-decoded detections within 7.5 um of CPU-decoded ones: {near}/{len(cpu_p)} (and {len(gpu_p)} GPU-decoded in all)")
d.gpu_decode = True
det, wall, use = timed(SLIDE)
print(f"50000x50000 slide, tissue only: {wall:.2f} s ({det.info['tiles']} tiles run, {det.info['tiles_skipped']} skipped); {use}")
EOF
fi
step finished
