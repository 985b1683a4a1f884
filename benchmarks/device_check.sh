#!/usr/bin/env bash
# Every GPU check of one lent GPU session, in one run (figures go to BENCHMARKS.md):
#   1. inputs for benchmarks/run.py, made there (too big to carry);
#   2. benchmarks/run.py on the GPU: baseline, exact, fast; seconds per 7215 x 5412 image
#      after start-up, model-alone MP/s, fast-mode agreement;
#   3. the parity and mode tests with the network on the GPU (MIDOG_TEST_DEVICE=cuda);
#   4. GPU batch sizes, end to end and model alone;
#   5. the torch.compile modes, which are the slowest to start;
#   6. a short domain-adversarial training run on the GPU (mixed precision), for epoch time.
# The GPU machines have PyTorch but not our readers: wheels for those go in .whl/ and a copy
# of ../shared in .devshared/ (both ignored by git), carried with the call. The call may
# carry 64 MiB in all, so weights/demo-synthetic.pth stays behind (move it aside for the
# call) and the figures use the reference-vector weights (the many-candidates stress case):
#   bash benchmarks/device_check.sh [STEP...]   (run by the device tool, carry [".whl", ".devshared"])
# STEPs: benchmark parity batches compiled training (default: all, in that order).
set -euo pipefail
steps=" ${*:-benchmark parity batches compiled training} "
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
timeout 200 python3 -c "import sys; sys.path.insert(0, 'benchmarks'); import run; run.prepare(slide=False)" || exit 1

if want benchmark; then
    step benchmark
    timeout 240 python3 benchmarks/run.py --device cuda --rounds 1 --weights vectors --modes exact,fast --skip-slide ${BENCH_ARGS:+"$BENCH_ARGS"} || failed benchmark
fi

if want parity; then
    step "parity on the GPU"
    MIDOG_TEST_DEVICE=cuda timeout 200 python3 -m pytest -q -p no:cacheprovider -W ignore::UserWarning \
        tests/test_parity.py tests/test_modes.py -k "not compiled" -rs 2>&1 | tail -8 || failed parity
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
step finished
