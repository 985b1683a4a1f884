#!/usr/bin/env bash
# Runs the built image on the reference test image as Grand Challenge would (no network,
# limited memory, all capabilities dropped, no privilege escalation, read-only /input) and
# compares /output/mitotic-figures.json with the reference's expected output (exact JSON
# equality for 2021, as the reference's own test does; see container/compare_json.py).
#   ./test.sh          2021 interface: test/ mounted as /input, compared with test/expected_output.json
#   ./test.sh 2022     2022+ interface: 007.tiff under images/histopathology-roi-cropout/,
#                      compared with test/expected_output_2022.json
# Environment: IMAGE (default midog-da-retinanet), MEMORY (default 16g), SHM_SIZE (default 2g).
set -euo pipefail
cd "$(dirname "$0")"

IMAGE=${IMAGE:-midog-da-retinanet}
MEMORY=${MEMORY:-16g}
SHM_SIZE=${SHM_SIZE:-2g}
LAYOUT=${1:-2021}

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

case "$LAYOUT" in
    2021)
        INPUT=$PWD/test
        EXPECTED=test/expected_output.json
        TOLERANCE=0
        ;;
    2022)
        INPUT=$WORK/input
        EXPECTED=test/expected_output_2022.json
        TOLERANCE=1e-4
        mkdir -p "$INPUT/images/histopathology-roi-cropout"
        cp test/007.tiff "$INPUT/images/histopathology-roi-cropout/"
        chmod -R a+rX "$INPUT"
        ;;
    *)
        echo "usage: $0 [2021|2022]" >&2
        exit 2
        ;;
esac
for f in test/007.tiff "$EXPECTED"; do
    if [ ! -f "$f" ]; then
        echo "test.sh: $f is missing: run ./build.sh first (it fetches the reference test files)" >&2
        exit 2
    fi
done

# The container's user (uid 10001) must be able to write the results.
OUTPUT=$WORK/output
mkdir -p "$OUTPUT"
chmod 777 "$OUTPUT"

GPU=()
if docker info --format '{{json .Runtimes}}' 2>/dev/null | grep -q nvidia; then
    GPU=(--gpus all)
else
    echo "test.sh: no NVIDIA container runtime: running on the CPU (a few minutes)"
fi

status=0
docker run --rm ${GPU[@]+"${GPU[@]}"} \
    --network none \
    --memory "$MEMORY" --memory-swap "$MEMORY" \
    --shm-size "$SHM_SIZE" \
    --cap-drop ALL \
    --security-opt no-new-privileges \
    --volume "$INPUT:/input:ro" \
    --volume "$OUTPUT:/output" \
    "$IMAGE" || status=$?
if [ "$status" -ne 0 ]; then
    echo "test.sh: FAIL: the container exited with status $status"
    exit 1
fi

RESULT=$OUTPUT/mitotic-figures.json
if [ ! -f "$RESULT" ]; then
    echo "test.sh: FAIL: the container wrote no /output/mitotic-figures.json"
    exit 1
fi
# 2021: exact JSON equality, as the reference's own test. 2022: the probabilities are float32
# scores whose last digits depend on the kernels (CPU or GPU), so they may differ by 1e-4.
if verdict=$(python3 container/compare_json.py "$RESULT" "$EXPECTED" "$TOLERANCE"); then
    echo "test.sh: PASS: $LAYOUT output and $EXPECTED $verdict"
else
    echo "test.sh: $verdict"
    echo "test.sh: FAIL: $LAYOUT output differs from $EXPECTED"
    exit 1
fi
