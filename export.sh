#!/usr/bin/env bash
# Exports what Grand Challenge takes: the image archive (`docker save | gzip`) and the model
# tarball (`tar -C model .`, extracted by the platform to /opt/ml/model/), both written
# under a temporary name and renamed when complete, then prints their sizes.
#   ./export.sh [ARCHIVE]     default: <image name>.tar.gz, e.g. midog-da-retinanet.tar.gz
#   MODEL_ARCHIVE=FILE        the model tarball (default model.tar.gz)
set -euo pipefail
cd "$(dirname "$0")"

IMAGE=${IMAGE:-midog-da-retinanet}
NAME=${IMAGE//[:\/]/_}
ARCHIVE=${1:-$NAME.tar.gz}
MODEL_ARCHIVE=${MODEL_ARCHIVE:-model.tar.gz}

if ! compgen -G "model/*.pth" >/dev/null && ! compgen -G "model/*.pt" >/dev/null && ! compgen -G "model/*.ckpt" >/dev/null; then
    echo "export.sh: model/ holds no checkpoint: run ./build.sh first (it fetches the weights)" >&2
    exit 2
fi

# An interrupted export never leaves a truncated archive that looks complete.
# shellcheck disable=SC2329  # called by the EXIT trap
cleanup() { rm -f "$ARCHIVE.partial" "$MODEL_ARCHIVE.partial"; }
trap cleanup EXIT

docker save "$IMAGE" | gzip -c >"$ARCHIVE.partial"
mv "$ARCHIVE.partial" "$ARCHIVE"
tar -C model -czf "$MODEL_ARCHIVE.partial" .
mv "$MODEL_ARCHIVE.partial" "$MODEL_ARCHIVE"
echo "export.sh: $IMAGE -> $ARCHIVE ($(du -h "$ARCHIVE" | cut -f1))"
echo "export.sh: model/ -> $MODEL_ARCHIVE ($(du -h "$MODEL_ARCHIVE" | cut -f1)): upload it as the algorithm's model"
