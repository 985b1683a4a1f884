#!/usr/bin/env bash
# Builds the container image. First fetches, with the project's own `midog fetch` (verified
# by git blob hash), whatever is missing of:
#   - the published weights into model/ (the platform's model tarball content, model/README.md),
#     as model/manifest.json lists them;
#   - the reference test image and expected outputs into test/ (for ./test.sh);
# then `docker build`.
#   ./build.sh [extra docker build options]
#   IMAGE=name:tag ./build.sh                    image name (default midog-da-retinanet)
#   BASE_IMAGE=some/pytorch:tag ./build.sh       another base (must ship the pinned torch)
#   PYTHON=/path/to/python ./build.sh            the Python that runs `midog fetch`
set -euo pipefail
cd "$(dirname "$0")"

IMAGE=${IMAGE:-midog-da-retinanet}

# The fetch needs the midog package importable: $PYTHON, the project's venv, an installed
# `midog`, or python3 with the requirements installed.
if [ -n "${PYTHON:-}" ]; then
    FETCH=("$PYTHON" -m midog fetch)
elif [ -x .venv/bin/python ]; then
    FETCH=(.venv/bin/python -m midog fetch)
elif command -v midog >/dev/null; then
    FETCH=(midog fetch)
else
    FETCH=(python3 -m midog fetch)
fi

for f in test/007.tiff test/expected_output.json test/expected_output_2022.json; do
    if [ ! -f "$f" ]; then
        echo "build.sh: $f missing: fetching the reference test files"
        "${FETCH[@]}" --root . test-image expected-2021 expected-2022
        break
    fi
done
# Always run: a verified file is left alone (no network), a wrong one is replaced. It copies
# weights/RetinaNetDA.pth when an earlier `midog fetch --root .` put it there.
"${FETCH[@]}" --root model --manifest model/manifest.json --no-progress weights

BUILD_ARGS=()
if [ -n "${BASE_IMAGE:-}" ]; then
    BUILD_ARGS+=(--build-arg "BASE_IMAGE=$BASE_IMAGE")
fi

docker build ${BUILD_ARGS[@]+"${BUILD_ARGS[@]}"} --tag "$IMAGE" "$@" .
echo "build.sh: built $IMAGE (weights: model/RetinaNetDA.pth, also for ./export.sh's model.tar.gz)"
