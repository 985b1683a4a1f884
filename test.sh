#!/usr/bin/env bash
# Runs the built image on the reference test image as Grand Challenge's own test script does
# (--platform linux/amd64, no network, --gpus all where an NVIDIA runtime exists, input
# read-only, model/ mounted read-only at /opt/ml/model, memory cap), hardened further (all
# capabilities dropped, no privilege escalation), and compares /output/mitotic-figures.json
# with the reference's expected output (container/compare_json.py). Then runs it again
# without the model mount, on the weights baked into the image. Each run's log must name the
# weights it used.
#   ./test.sh          2021 interface: test/ mounted as /input, compared with test/expected_output.json
#   ./test.sh 2022     2022 interface: 007.tiff under images/histopathology-roi-cropout/,
#                      compared with test/expected_output_2022.json
#   ./test.sh 2025     2025 interface: the same folder named by /input/inputs.json; the 2022
#                      expected output plus the top-level "name": "Points of interest"
#   ./test.sh --cpus 4 [LAYOUT]   the same on 4 CPUs only, the platform's T4 instance's
#                      (docker --cpus, and --cpuset-cpus so that the container's threads see
#                      4 cores); each run's time is printed (docs/performance.md)
# Environment: IMAGE (default midog-da-retinanet), MEMORY (default 16g), SHM_SIZE (default 2g).
set -euo pipefail
cd "$(dirname "$0")"

IMAGE=${IMAGE:-midog-da-retinanet}
MEMORY=${MEMORY:-16g}
SHM_SIZE=${SHM_SIZE:-2g}
CPU_LIMIT=()
if [ "${1:-}" = --cpus ]; then
    if ! [[ ${2:-} =~ ^[1-9][0-9]*$ ]]; then
        echo "usage: $0 [--cpus N] [2021|2022|2025]" >&2
        exit 2
    fi
    CPU_LIMIT=(--cpus "$2")
    # Pinning to N cores as well makes the container's own count (affinity) N, so torch and
    # the reader threads size themselves as on the platform; a smaller host keeps its cores.
    if [ "$(nproc)" -ge "$2" ]; then
        CPU_LIMIT+=(--cpuset-cpus "0-$(($2 - 1))")
    fi
    shift 2
fi
LAYOUT=${1:-2021}

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

COMPARE=()
case "$LAYOUT" in
    2021)
        INPUT=$PWD/test
        EXPECTED=test/expected_output.json
        TOLERANCE=0
        ;;
    2022 | 2025)
        INPUT=$WORK/input
        EXPECTED=test/expected_output_2022.json
        TOLERANCE=1e-4
        mkdir -p "$INPUT/images/histopathology-roi-cropout"
        cp test/007.tiff "$INPUT/images/histopathology-roi-cropout/"
        if [ "$LAYOUT" = 2025 ]; then
            # The sockets file in the shape Grand Challenge writes it.
            cat >"$INPUT/inputs.json" <<'JSON'
[{"pk": 1, "file": null, "value": null, "image": {"pk": "00000000-0000-0000-0000-000000000007", "name": "007.tiff"},
  "interface": {"pk": 1, "kind": "Image", "slug": "histopathology-region-of-interest-cropout",
                "title": "Histopathology Region of Interest Cropout", "super_kind": "Image",
                "relative_path": "images/histopathology-roi-cropout"}}]
JSON
            COMPARE=(--name "Points of interest")
        fi
        chmod -R a+rX "$INPUT"
        ;;
    *)
        echo "usage: $0 [--cpus N] [2021|2022|2025]" >&2
        exit 2
        ;;
esac
for f in test/007.tiff "$EXPECTED"; do
    if [ ! -f "$f" ]; then
        echo "test.sh: $f is missing: run ./build.sh first (it fetches the reference test files)" >&2
        exit 2
    fi
done
if ! compgen -G "model/*.pth" >/dev/null && ! compgen -G "model/*.pt" >/dev/null && ! compgen -G "model/*.ckpt" >/dev/null; then
    echo "test.sh: model/ holds no checkpoint: run ./build.sh first (it fetches the weights)" >&2
    exit 2
fi
chmod -R a+rX model

GPU=()
if docker info --format '{{json .Runtimes}}' 2>/dev/null | grep -q nvidia; then
    GPU=(--gpus all)
else
    echo "test.sh: no NVIDIA container runtime: running on the CPU (a few minutes per run)"
fi

# run_image ID NAME WEIGHTS_PATTERN [docker run options]: one run, its output compared with
# the expected one and its log searched for where the weights came from.
failures=0
run_image() {
    local id=$1 name=$2 pattern=$3
    shift 3
    local output=$WORK/output-$id log=$WORK/log-$id status=0 started=$SECONDS
    # The container's user (uid 10001) must be able to write the results.
    mkdir -p "$output"
    chmod 777 "$output"
    echo "test.sh: run '$name'"
    docker run --rm --platform linux/amd64 ${GPU[@]+"${GPU[@]}"} \
        --network none \
        --memory "$MEMORY" --memory-swap "$MEMORY" \
        --shm-size "$SHM_SIZE" \
        ${CPU_LIMIT[@]+"${CPU_LIMIT[@]}"} \
        --cap-drop ALL \
        --security-opt no-new-privileges \
        --volume "$INPUT:/input:ro" \
        --volume "$output:/output" \
        "$@" \
        "$IMAGE" 2>"$log" || status=$?
    cat "$log" >&2
    echo "test.sh: run '$name' took $((SECONDS - started)) s${CPU_LIMIT[*]+ (${CPU_LIMIT[*]})}"
    if [ "$status" -ne 0 ]; then
        echo "test.sh: FAIL: $name: the container exited with status $status"
        failures=$((failures + 1))
        return
    fi
    if ! grep -q -- "$pattern" "$log"; then
        echo "test.sh: FAIL: $name: the log does not say the weights came from $pattern"
        failures=$((failures + 1))
        return
    fi
    local result=$output/mitotic-figures.json verdict
    if [ ! -f "$result" ]; then
        echo "test.sh: FAIL: $name: the container wrote no /output/mitotic-figures.json"
        failures=$((failures + 1))
    # 2021: exact JSON equality, as the reference's own test. 2022/2025: the probabilities are
    # float32 scores whose last digits depend on the kernels (CPU or GPU), so within 1e-4.
    elif verdict=$(python3 container/compare_json.py "$result" "$EXPECTED" "$TOLERANCE" ${COMPARE[@]+"${COMPARE[@]}"}); then
        echo "test.sh: PASS: $name: $LAYOUT output and $EXPECTED $verdict"
    else
        echo "test.sh: $verdict"
        echo "test.sh: FAIL: $name: $LAYOUT output differs from $EXPECTED"
        failures=$((failures + 1))
    fi
}

run_image mounted "model mounted at /opt/ml/model" "(the platform's model folder" --volume "$PWD/model:/opt/ml/model:ro"
run_image baked "baked-in weights" "(baked in"

if [ "$failures" -ne 0 ]; then
    echo "test.sh: FAIL: $failures of 2 runs"
    exit 1
fi
echo "test.sh: PASS: both runs"
