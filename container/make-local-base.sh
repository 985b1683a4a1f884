#!/usr/bin/env bash
# Makes a local stand-in for the PyTorch base image, for building our Dockerfile where no
# registry image can be pulled: Debian bookworm (minbase) + Python 3.11 venv at /opt/venv
# holding torch/torchvision at the versions requirements.txt pins, installed with the host's
# pip (which finds the wheels already on this machine). Committed into buildah's vfs storage
# as $BASE_IMAGE. Idempotent: does nothing when the image already exists.
# Needs root, buildah and debootstrap (apt-get install -y buildah debootstrap).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")
BASE_IMAGE=${BASE_IMAGE:-localhost/midog-local-base:torch-2.14.1}
HOST_PYTHON=${HOST_PYTHON:-$ROOT/.venv/bin/python}
BUILDAH=(buildah --storage-driver vfs)

if "${BUILDAH[@]}" inspect --type image "$BASE_IMAGE" >/dev/null 2>&1; then
    echo "make-local-base: $BASE_IMAGE already exists"
    exit 0
fi

# torch and torchvision exactly as requirements.txt pins them, so the Dockerfile's
# "never replace the base's torch" constraint is exercised as it would be on the real base.
TORCH_PINS=$(grep -E '^(torch|torchvision)==' "$ROOT/requirements.txt")

WORK=$(mktemp -d /var/tmp/midog-base.XXXXXX)
CTR=""
cleanup() {
    if [ -n "$CTR" ]; then "${BUILDAH[@]}" rm "$CTR" >/dev/null 2>&1 || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT

echo "make-local-base: debootstrap bookworm (minbase) into $WORK/rootfs"
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$WORK/rootfs" >"$WORK/debootstrap.log" 2>&1 \
    || { tail -20 "$WORK/debootstrap.log"; exit 1; }

echo "make-local-base: python3 -m venv /opt/venv"
chroot "$WORK/rootfs" python3 -m venv /opt/venv
# This machine reaches PyPI through a TLS-inspecting proxy: trust its CAs inside the base too,
# so that `pip install` in the Dockerfile works here. A real base image does not need this.
if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
    cp /usr/local/share/ca-certificates/*.crt "$WORK/rootfs/usr/local/share/ca-certificates/"
    chroot "$WORK/rootfs" update-ca-certificates >/dev/null
fi

echo "make-local-base: installing $(echo "$TORCH_PINS" | tr '\n' ' ')with the host's pip"
SITE="$WORK/rootfs/opt/venv/lib/python3.11/site-packages"
# --upgrade: replace the venv's own older setuptools instead of leaving two versions half-merged.
# shellcheck disable=SC2086  # one argument per pin
"$HOST_PYTHON" -m pip install --quiet --no-compile --upgrade --target "$SITE" $TORCH_PINS
rm -rf "${SITE:?}/bin"  # console scripts written for the host's interpreter path
rm -rf "$WORK/rootfs/var/cache/apt/archives/"*.deb "$WORK/rootfs/var/lib/apt/lists/"*

echo "make-local-base: committing $BASE_IMAGE"
CTR=$("${BUILDAH[@]}" from scratch)
MNT=$("${BUILDAH[@]}" mount "$CTR")
cp -a "$WORK/rootfs/." "$MNT/"
"${BUILDAH[@]}" umount "$CTR" >/dev/null
"${BUILDAH[@]}" config \
    --env PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
    --env LANG=C.UTF-8 \
    --cmd /bin/bash "$CTR"
"${BUILDAH[@]}" commit --quiet "$CTR" "$BASE_IMAGE" >/dev/null
echo "make-local-base: done: $("${BUILDAH[@]}" images --format '{{.Name}}:{{.Tag}} {{.Size}}' "$BASE_IMAGE")"
