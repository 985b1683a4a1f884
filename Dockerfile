# MIDOG 2021 mitotic-figure detector (DA-RetinaNet) as a Grand Challenge algorithm container.
# Build: ./build.sh   Test: ./test.sh   Export: ./export.sh   (see container/README.md)
#
# Base image: the official PyTorch *runtime* image for exactly the torch that
# requirements.txt pins (2.14.1). The PyPI wheel of torch 2.14.1 is built for CUDA 13.0 and
# cuDNN 9, so the tag is the matching "cuda13.0-cudnn9-runtime" one: CUDA libraries that fit
# torch's own build, and "runtime" rather than "devel" because nothing is compiled (several
# GB smaller). The tag follows PyTorch's naming scheme but could not be checked against the
# registry from the development machine: verify it with `docker pull` before relying on it,
# or pass another with --build-arg BASE_IMAGE=... (container/buildah-check.sh passes a
# locally made base this way). Whatever the base, it must ship the pinned torch/torchvision.
ARG BASE_IMAGE=pytorch/pytorch:2.14.1-cuda13.0-cudnn9-runtime
FROM ${BASE_IMAGE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# A non-root user runs the algorithm, named by number so that the runtime can tell it is not
# root without reading /etc/passwd (10001: clear of the uid 1000 some base images already use).
# /output must be writable by it (Grand Challenge mounts its own; test.sh a world-writable one).
RUN groupadd --gid 10001 algorithm \
    && useradd --uid 10001 --gid algorithm --create-home --home-dir /home/algorithm algorithm \
    && mkdir -p /opt/app /input /output /opt/ml/model \
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

# Code and weights last, so code changes reuse the dependency layer. The published weights
# (fetched by build.sh) are baked in: nothing is downloaded at run time. Files stay root-owned,
# read-only to the algorithm user.
COPY midog/ /opt/app/midog/
COPY weights/ /opt/app/weights/
COPY process.py /opt/app/process.py

USER 10001:10001

ENTRYPOINT ["python", "-m", "process"]
