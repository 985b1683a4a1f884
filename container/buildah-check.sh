#!/usr/bin/env bash
# A real build of our Dockerfile without a Docker engine, and a run of its entry point inside
# the built image. Debian's buildah builds with vfs storage and chroot isolation:
#   1. container/make-local-base.sh: a local stand-in for the PyTorch base (Debian bookworm,
#      Python 3.11, the pinned torch/torchvision), made once and then reused;
#   2. `buildah build` of ./Dockerfile on it (BASE_IMAGE build argument), which installs
#      requirements.txt from PyPI under the base's torch constraints;
#   3. runs the image's ENTRYPOINT, as the image's user, in a new network namespace with only
#      a loopback that is down (`unshare --net`: buildah's own `--network none` is refused with
#      chroot isolation), with all capabilities dropped and
#      read-only /input and /opt/ml/model mounts: on the 2021, 2022 and 2025 (inputs.json)
#      layouts, on a reference-vectors image with the reference-vector weights supplied through
#      /opt/ml/model (the platform's model override); and `midog train --help`, the installed
#      package's training command, as `docker run --entrypoint midog IMAGE train --help` would;
#   4. compares /output/mitotic-figures.json with the expected vector JSON (container/compare_json.py:
#      exact for 2021, 2022 probabilities within 1e-4; 2025 as 2022 plus its top-level name).
# Needs root, buildah, debootstrap, ../shared/reference-vectors and the project venv (.venv).
# Usage: container/buildah-check.sh [--keep-image] [--remove-base]
# Disk: the base is about 6 GB and vfs copies it per image and per container (~20 GB peak).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")
cd "$ROOT"

BASE_IMAGE=${BASE_IMAGE:-localhost/midog-local-base:torch-2.14.1}
IMAGE=${IMAGE:-localhost/midog-da-retinanet:buildah-check}
VECTORS=${VECTORS:-$ROOT/../shared/reference-vectors}
VECTOR=${VECTOR:-synthC_512x512}
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
BUILDAH=(buildah --storage-driver vfs)
KEEP_IMAGE=0
REMOVE_BASE=0
for arg in "$@"; do
    case "$arg" in
        --keep-image) KEEP_IMAGE=1 ;;
        --remove-base) REMOVE_BASE=1 ;;
        *) echo "usage: $0 [--keep-image] [--remove-base]" >&2; exit 2 ;;
    esac
done

for tool in buildah debootstrap unshare; do
    command -v "$tool" >/dev/null || { echo "buildah-check: $tool not found (apt-get install -y buildah debootstrap)" >&2; exit 2; }
done
[ -f "$VECTORS/$VECTOR.tiff" ] || { echo "buildah-check: $VECTORS/$VECTOR.tiff not found" >&2; exit 2; }

START=$SECONDS
step() { echo "== buildah-check [$((SECONDS - START)) s]: $*"; }

WORK=$(mktemp -d /var/tmp/midog-check.XXXXXX)
CTR=""
# shellcheck disable=SC2329  # called by the EXIT trap
cleanup() {
    if [ -n "$CTR" ]; then "${BUILDAH[@]}" rm "$CTR" >/dev/null 2>&1 || true; fi
    if [ "$KEEP_IMAGE" = 0 ]; then "${BUILDAH[@]}" rmi "$IMAGE" >/dev/null 2>&1 || true; fi
    if [ "$REMOVE_BASE" = 1 ]; then "${BUILDAH[@]}" rmi "$BASE_IMAGE" >/dev/null 2>&1 || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT

step "base image $BASE_IMAGE"
"$HERE/make-local-base.sh"

step "buildah build of ./Dockerfile on $BASE_IMAGE"
"${BUILDAH[@]}" build --isolation chroot --pull=never \
    --build-arg "BASE_IMAGE=$BASE_IMAGE" --tag "$IMAGE" --file Dockerfile .
"${BUILDAH[@]}" images --format '{{.Name}}:{{.Tag}} {{.Size}}' "$IMAGE"
CONFIG=$("${BUILDAH[@]}" inspect --type image "$IMAGE")
echo "user: $("$PYTHON" -c 'import json, sys; print(json.load(sys.stdin)["OCIv1"]["config"].get("User"))' <<<"$CONFIG")"
mapfile -t ENTRY < <("$PYTHON" -c 'import json, sys; print("\n".join(json.load(sys.stdin)["OCIv1"]["config"]["Entrypoint"]))' <<<"$CONFIG")
echo "entry point: ${ENTRY[*]}"

step "inputs: $VECTOR in the 2021, 2022 and 2025 layouts; reference-vector weights as the /opt/ml/model upload"
mkdir -p "$WORK/model" "$WORK/in2021" "$WORK/in2022/images/histopathology-roi-cropout" "$WORK/in2025/images/histopathology-roi-cropout" \
    "$WORK/out2021" "$WORK/out2022" "$WORK/out2025"
PYTHONPATH="$ROOT/tests" "$PYTHON" -c '
import sys, torch
from conftest import build_vector_weights, weights_sha256, VECTOR_WEIGHTS_SHA256
state = build_vector_weights(__import__("pathlib").Path(sys.argv[1]))
assert weights_sha256(state) == VECTOR_WEIGHTS_SHA256, "vector weights rule mismatch"
torch.save(state, sys.argv[2])' "$VECTORS/state_dict_keys.txt" "$WORK/model/vectors.pth"
cp "$VECTORS/$VECTOR.tiff" "$WORK/in2021/"
cp "$VECTORS/$VECTOR.expected_2021.json" "$WORK/in2021/expected_output.json"  # a non-image file: skipped
cp "$VECTORS/$VECTOR.tiff" "$WORK/in2022/images/histopathology-roi-cropout/"
cp "$VECTORS/$VECTOR.tiff" "$WORK/in2025/images/histopathology-roi-cropout/"
cat >"$WORK/in2025/inputs.json" <<'JSON'
[{"pk": 1, "file": null, "value": null, "image": {"pk": "00000000-0000-0000-0000-000000000001", "name": "image.tiff"},
  "interface": {"pk": 1, "kind": "Image", "slug": "histopathology-region-of-interest-cropout",
                "super_kind": "Image", "relative_path": "images/histopathology-roi-cropout"}}]
JSON
chmod -R a+rX "$WORK/model" "$WORK/in2021" "$WORK/in2022" "$WORK/in2025"
chmod 777 "$WORK/out2021" "$WORK/out2022" "$WORK/out2025"  # written by the image's non-root user

step "working container from $IMAGE"
CTR=$("${BUILDAH[@]}" from --pull=never "$IMAGE")

# Every run: a fresh network namespace with no interface up (unshare --net); no capabilities;
# the inputs and the model read-only.
run_in_image() {
    local input=$1 output=$2
    shift 2
    unshare --net "${BUILDAH[@]}" run --isolation chroot --cap-drop all \
        --volume "$input:/input:ro" --volume "$output:/output" --volume "$WORK/model:/opt/ml/model:ro" \
        "$CTR" -- "$@"
}

step "identity and network inside the image"
# shellcheck disable=SC2016  # expanded inside the image, not here
run_in_image "$WORK/in2021" "$WORK/out2021" sh -c 'echo "uid=$(id -u) gid=$(id -g) cwd=$(pwd)"; grep -E "^Cap(Eff|Prm)" /proc/self/status'
run_in_image "$WORK/in2021" "$WORK/out2021" python -c '
import os, socket, sys
assert os.getuid() != 0, "running as root"
interfaces = [name for _, name in socket.if_nameindex()]
assert interfaces == ["lo"], f"network interfaces: {interfaces}"
print(f"network interfaces: {interfaces}")
try:
    socket.create_connection(("pypi.org", 443), timeout=5)
except OSError as exc:
    print(f"network: unreachable as required ({type(exc).__name__}: {exc})")
else:
    sys.exit("network: reachable, but the run must have none")
assert not os.access("/input", os.W_OK), "/input is writable"
print("/input: read-only")'

status=0
step "midog train --help inside the image (the installed package's training command)"
if run_in_image "$WORK/in2021" "$WORK/out2021" midog train --help >"$WORK/train-help.txt"; then
    echo "buildah-check: PASS: midog train --help ($(wc -l <"$WORK/train-help.txt") lines)"
else
    echo "buildah-check: FAIL: midog train --help"
    status=1
fi

for layout in 2021 2022 2025; do
    step "entry point ${ENTRY[*]} on the $layout layout"
    rc=0
    run_in_image "$WORK/in$layout" "$WORK/out$layout" "${ENTRY[@]}" || rc=$?
    expected="$VECTORS/$VECTOR.expected_$layout.json"
    tolerance=0
    name=()
    if [ "$layout" != 2021 ]; then tolerance=1e-4; fi  # float32 probabilities, see compare_json.py
    if [ "$layout" = 2025 ]; then
        expected="$VECTORS/$VECTOR.expected_2022.json"
        name=(--name "Points of interest")
    fi
    if [ "$rc" -ne 0 ]; then
        echo "buildah-check: FAIL: $layout: entry point exited with $rc"
        status=1
    elif verdict=$("$PYTHON" "$HERE/compare_json.py" "$WORK/out$layout/mitotic-figures.json" "$expected" "$tolerance" "${name[@]+"${name[@]}"}"); then
        echo "buildah-check: PASS: $layout: mitotic-figures.json and $(basename "$expected") $verdict"
    else
        echo "buildah-check: FAIL: $layout: mitotic-figures.json and $(basename "$expected") $verdict"
        status=1
    fi
done

step "done; storage in use: $(du -sh /var/lib/containers/storage 2>/dev/null | cut -f1)"
if [ "$status" -eq 0 ]; then echo "buildah-check: PASS"; else echo "buildah-check: FAIL"; fi
exit "$status"
