"""Shared fixtures: the `../shared` data (skipped with a reason when absent) and the
reference-vector synthetic weights, built by the rule in reference-vectors/README.md."""

from __future__ import annotations

import hashlib
import math
import os
import zlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
VECTORS = SHARED / "reference-vectors"
VECTOR_NAMES = ["synthA_1400x1000", "synthB_1100x1700", "synthC_512x512"]
# Pixel spacing of each vector image in mm, as its README gives it.
VECTOR_SPACING_MM = {"synthA_1400x1000": 0.00025, "synthB_1100x1700": 25.4 / 111676, "synthC_512x512": 0.00025}
# Where the parity and mode tests run the network: `MIDOG_TEST_DEVICE=cuda pytest ...`
# checks the GPU path against the same vectors (CI has no GPU and uses the CPU).
DEVICE = os.environ.get("MIDOG_TEST_DEVICE", "cpu")
VECTOR_WEIGHTS_SHA256 = "4638f1ee03df31e94f0f8ea928e783ad03491322291ae2803d7065f0c096eadd"


def need_shared(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} is absent: this check needs ../shared beside the project")
    return path


def build_vector_weights(keys_file: Path) -> dict:
    """The README's rule: per key a CRC32-seeded Kaiming normal for ndim >= 2, identity
    BatchNorm, zero biases except classifier.3.bias = -5, final head convs times 1/16."""
    import torch

    state = {}
    for line in keys_file.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        key, shape_text = line.split("\t")
        shape = [int(s) for s in shape_text.strip("[]").split(",") if s.strip()]
        g = torch.Generator().manual_seed(zlib.crc32(key.encode()))
        if key.endswith("num_batches_tracked"):
            t = torch.tensor(0, dtype=torch.int64)
        elif len(shape) >= 2:
            t = torch.randn(shape, generator=g) * math.sqrt(2 / math.prod(shape[1:]))
            if key in ("classifier.3.weight", "box_regressor.3.weight"):
                t = t * 0.0625
        elif key.endswith(".weight") or key.endswith("running_var"):
            t = torch.ones(shape)  # the only 1-D weights are BatchNorm's
        elif key == "classifier.3.bias":
            t = torch.full(shape, -5.0)
        else:
            t = torch.zeros(shape)
        state[key] = t
    return state


def weights_sha256(state: dict) -> str:
    h = hashlib.sha256()
    for key, t in state.items():
        if not key.endswith("num_batches_tracked"):
            h.update(t.float().contiguous().numpy().tobytes())
    return h.hexdigest()


@pytest.fixture(scope="session")
def vector_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A weights file for the reference vectors, its SHA-256 checked against the README's."""
    import torch

    state = build_vector_weights(need_shared(VECTORS / "state_dict_keys.txt"))
    assert weights_sha256(state) == VECTOR_WEIGHTS_SHA256
    path = tmp_path_factory.mktemp("weights") / "vectors.pth"
    torch.save(state, path)
    return path


@pytest.fixture(scope="session")
def vectors_dir() -> Path:
    return need_shared(VECTORS)


@pytest.fixture(scope="session")
def random_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Seeded untrained weights: for checks of input handling that need no real detections."""
    import torch

    from midog.network.retinanet import RetinaNetDA

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "random.pth"
    torch.save(RetinaNetDA().state_dict(), path)
    return path


@pytest.fixture(scope="session")
def chromium() -> str:
    """Headless Chromium for the page tests (installed from Debian when root), else a skip
    with the reason."""
    from browser import find_or_install_chromium

    pytest.importorskip("websocket", reason="the browser tests drive Chromium with websocket-client (requirements-dev.txt)")
    executable, why = find_or_install_chromium()
    if executable is None:
        pytest.skip(why)
    return executable
