# MIDOG 2021 mitotic-figure detector (DA-RetinaNet) as a Grand Challenge algorithm container.
# Build: ./build.sh   Test: ./test.sh   Export: ./export.sh   (see container/README.md)
#
# Base image: the official PyTorch *runtime* image of exactly the torch that requirements.txt
# pins (2.14.1), in its CUDA 12.6 build. Grand Challenge runs algorithms on T4 instances
# whose driver version it does not publish; CUDA 12.x runs on drivers from 525.60.13 on
# (minor-version compatibility; 560.28.03 or newer for every CUDA 12.6 feature), while the
# CUDA 13.0 build of the PyPI wheel needs 580 or newer and, on an older host, would leave
# torch without CUDA. "runtime" rather than "devel": nothing is compiled (several GB smaller).
# The tag follows PyTorch's naming scheme but could not be checked against the registry from
# the development machine: verify it with `docker pull`, or pass another with
# --build-arg BASE_IMAGE=... (container/buildah-check.sh passes a locally made base this way).
# Whatever the base, it must ship the pinned torch/torchvision.
ARG BASE_IMAGE=pytorch/pytorch:2.14.1-cuda12.6-cudnn9-runtime
FROM ${BASE_IMAGE}

# MIDOG_HOME: where `midog` looks for the published weights (a link to the baked-in model/).
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MIDOG_HOME=/opt/app/home

# A non-root user runs the algorithm, named by number so that the runtime can tell it is not
# root without reading /etc/passwd (10001: clear of the uid 1000 some base images already use).
# /output must be writable by it (Grand Challenge mounts its own; test.sh a world-writable one).
RUN groupadd --gid 10001 algorithm \
    && useradd --uid 10001 --gid algorithm --create-home --home-dir /home/algorithm algorithm \
    && mkdir -p /opt/app/home/weights /input /output /opt/ml/model \
    && ln -s /opt/app/model/RetinaNetDA.pth /opt/app/home/weights/RetinaNetDA.pth \
    && chown algorithm:algorithm /output

WORKDIR /opt/app

# Dependencies from requirements.txt, pinned there. The base's own torch and torchvision are
# written out as constraints first: pip keeps them when requirements.txt pins the same
# versions, and fails the build loudly (instead of silently downloading a different torch of
# several GB) when they differ. The check afterwards proves torch was left alone.
COPY requirements.txt /opt/app/requirements.txt
RUN python -c "from importlib.metadata import version as v; print(f'torch=={v(\"torch\")}\ntorchvision=={v(\"torchvision\")}')" > /opt/app/base-constraints.txt \
    && pip install --no-cache-dir -r /opt/app/requirements.txt -c /opt/app/base-constraints.txt \
    && python -c "from importlib.metadata import version as v; import sys; c = open('/opt/app/base-constraints.txt').read().split(); sys.exit(c != [f'torch=={v(\"torch\")}', f'torchvision=={v(\"torchvision\")}'])"

# The package, installed as the README installs it but not editable: into site-packages, with
# its package data (weights/: the demo model and the artefact manifest), so `midog` (training
# included) works in the image: `docker run --entrypoint midog IMAGE train --help`. With the
# `gpu` extra (nvImageCodec for CUDA 12): fast mode decodes JPEG-tiled slides on the GPU.
COPY pyproject.toml README.md /opt/app/src/
COPY midog/ /opt/app/src/midog/
COPY weights/ /opt/app/src/weights/
RUN pip install --no-cache-dir -c /opt/app/base-constraints.txt /opt/app/src[gpu] \
    && rm -rf /opt/app/src \
    && python -c "from importlib.metadata import version as v; import sys; c = open('/opt/app/base-constraints.txt').read().split(); sys.exit(c != [f'torch=={v(\"torch\")}', f'torchvision=={v(\"torchvision\")}'])"

# The weights last, so that new weights reuse every layer above. model/ is what the platform's
# model tarball holds (model/README.md); baked in as well, so an image uploaded alone still
# works, while a checkpoint the platform extracts to /opt/ml/model/ wins at run time.
# Files stay root-owned, read-only to the algorithm user. Nothing is downloaded at run time.
COPY process.py /opt/app/process.py
COPY model/ /opt/app/model/

USER 10001:10001

ENTRYPOINT ["python", "-m", "process"]
