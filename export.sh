#!/usr/bin/env bash
# Exports the built image for upload to Grand Challenge: `docker save | gzip`.
#   ./export.sh [ARCHIVE]     default: <image name>.tar.gz, e.g. midog-da-retinanet.tar.gz
set -euo pipefail
cd "$(dirname "$0")"

IMAGE=${IMAGE:-midog-da-retinanet}
NAME=${IMAGE//[:\/]/_}
ARCHIVE=${1:-$NAME.tar.gz}

# Written under a temporary name and renamed at the end: an interrupted export never leaves
# a truncated archive that looks complete.
docker save "$IMAGE" | gzip -c >"$ARCHIVE.partial"
mv "$ARCHIVE.partial" "$ARCHIVE"
echo "export.sh: $IMAGE -> $ARCHIVE ($(du -h "$ARCHIVE" | cut -f1))"
