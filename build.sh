#!/usr/bin/env bash
# Builds the container image. First fetches the published weights and the reference test
# files (verified by git blob hash) when any is missing, with the project's own
# `midog fetch`; then `docker build`.
#   ./build.sh [extra docker build options]
#   IMAGE=name:tag ./build.sh                    image name (default midog-da-retinanet)
#   BASE_IMAGE=some/pytorch:tag ./build.sh       another base (must ship the pinned torch)
set -euo pipefail
cd "$(dirname "$0")"

IMAGE=${IMAGE:-midog-da-retinanet}

# The fetch needs the midog package importable: an installed `midog`, the project's venv,
# or $PYTHON / python3 with the requirements installed.
if [ -n "${PYTHON:-}" ]; then
    FETCH=("$PYTHON" -m midog fetch)
elif [ -x .venv/bin/python ]; then
    FETCH=(.venv/bin/python -m midog fetch)
elif command -v midog >/dev/null; then
    FETCH=(midog fetch)
else
    FETCH=(python3 -m midog fetch)
fi

for f in weights/RetinaNetDA.pth test/007.tiff test/expected_output.json test/expected_output_2022.json; do
    if [ ! -f "$f" ]; then
        echo "build.sh: $f missing: fetching the published artefacts"
        "${FETCH[@]}" --root .
        break
    fi
done

BUILD_ARGS=()
if [ -n "${BASE_IMAGE:-}" ]; then
    BUILD_ARGS+=(--build-arg "BASE_IMAGE=$BASE_IMAGE")
fi

docker build ${BUILD_ARGS[@]+"${BUILD_ARGS[@]}"} --tag "$IMAGE" "$@" .
echo "build.sh: built $IMAGE"
