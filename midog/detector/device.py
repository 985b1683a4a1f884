"""Which device the network runs on, and why: the choice (`pick_device`), what the machine
offers (`describe_runtime`), and a loud diagnosis when an NVIDIA GPU is present but PyTorch
cannot use it, which would otherwise turn a ~1 s GPU job into a ~40 s CPU one in silence."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ..config import DetectorConfig
from ..errors import MidogError

if TYPE_CHECKING:
    import torch

# Oldest Linux driver each CUDA major release runs on (NVIDIA's CUDA compatibility table;
# within a major release, minor-version compatibility lets the oldest driver serve all).
MIN_DRIVER = {"11": "450.80.02", "12": "525.60.13", "13": "580.65.06"}
# Measured: exact float32 detection of a 7215 x 5412 MIDOG image on 2 CPU cores (BENCHMARKS.md).
CPU_SECONDS_PER_IMAGE = 40
NVIDIA_PROC = Path("/proc/driver/nvidia/version")


def nvidia_driver(proc_file: Path = NVIDIA_PROC) -> str | None:
    """The NVIDIA kernel driver's version when an NVIDIA GPU is present, "unknown" when one
    is present but its version cannot be read, None when there is none."""
    try:
        match = re.search(r"Kernel Module.*?\s(\d+\.\d+(?:\.\d+)?)\s", proc_file.read_text())
        if match:
            return match.group(1)
    except OSError:
        pass
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run([smi, "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True, text=True, timeout=20)
            if out.returncode == 0 and out.stdout.strip():
                return out.stdout.split()[0]
        except (OSError, subprocess.SubprocessError):
            pass
    if proc_file.exists() or Path("/dev/nvidia0").exists():
        return "unknown"
    return None


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", version))


def cuda_problem(driver: str | None, torch_cuda: str | None, cuda_available: bool) -> str | None:
    """Why torch cannot use a present NVIDIA GPU, in words (driver found, driver needed,
    expected CPU time); None when there is no GPU or torch can use it."""
    if driver is None or cuda_available:
        return None
    if torch_cuda is None:
        cause = "this PyTorch is a CPU-only build; install a CUDA build of the pinned torch"
    else:
        needed = MIN_DRIVER.get(torch_cuda.split(".")[0])
        if needed and driver != "unknown" and _version_tuple(driver) < _version_tuple(needed):
            cause = f"driver {driver} found, CUDA {torch_cuda} needs driver {needed} or newer"
        else:
            need = f"driver {needed} or newer" if needed else f"a driver for CUDA {torch_cuda}"
            cause = f"driver {driver} found; PyTorch's CUDA {torch_cuda} needs {need}, yet CUDA did not initialise (is the device passed to the container, e.g. --gpus all?)"
    return (
        f"an NVIDIA GPU is present but PyTorch cannot use it: {cause}. "
        f"On the CPU, expect about {CPU_SECONDS_PER_IMAGE} s per 7215 x 5412 image on 2 cores instead of ~1 s."
    )


def diagnose_cuda() -> str | None:
    """cuda_problem() for this machine."""
    import torch

    driver = nvidia_driver()
    if driver is None:
        return None
    return cuda_problem(driver, torch.version.cuda, torch.cuda.is_available())


def warn(message: str) -> None:
    # Printed, not logged: a GPU that torch cannot use must reach the operator's console
    # even under --quiet or a platform's own logging set-up.
    bar = "!" * 78
    print(f"{bar}\nWARNING: {message}\n{bar}", file=sys.stderr, flush=True)


def pick_device(device: str = "auto") -> "torch.device":
    """`auto`: CUDA when torch can use it, else the CPU (loudly, when an NVIDIA GPU is present
    but unusable). `cuda[:N]` never falls back: it raises when CUDA cannot be used."""
    import torch

    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        problem = diagnose_cuda()
        if problem:
            warn(f"{problem} Running on the CPU; pass --device cuda to refuse that.")
        return torch.device("cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        problem = diagnose_cuda() or "PyTorch sees no CUDA device (no NVIDIA GPU or driver on this machine)"
        raise MidogError(f"--device {device} was asked for, but {problem}")
    try:
        return torch.device(device)
    except RuntimeError as exc:
        raise MidogError(f"--device {device!r}: {exc}") from None


def describe_runtime(device: "torch.device") -> str:
    """One line for the start-up log: torch and CUDA versions, then the GPU and its driver or "CPU"."""
    import torch

    cuda = f"CUDA {torch.version.cuda}" if torch.version.cuda else "CPU-only build"
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        driver = nvidia_driver() or "unknown"
        where = f"GPU {torch.cuda.get_device_name(index)} (driver {driver})"
    else:
        where = f"CPU ({torch.get_num_threads()} threads)"
    return f"torch {torch.__version__} ({cuda}); running on {where}"


def bf16_supported(device: "torch.device") -> bool:
    import torch

    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def auto_batch_size(device: "torch.device", fast: bool, config: DetectorConfig) -> int:
    """On the CPU 4 tiles in float32, the reference's 10 in fast mode; on a GPU up to 32
    tiles, fewer when half the free memory cannot hold them. Small GPU batches keep
    several in flight, so that the decoding threads work on different parts of the image.

    Measured on a 2-core machine: float32 runs as fast with 4 tiles as with 10 and peaks
    ~300 MB lower; bfloat16 (AMX) runs 15-20 % faster with 10."""
    import torch

    if device.type != "cuda":
        return config.batch_size if fast else min(4, config.batch_size)
    free, _ = torch.cuda.mem_get_info(device)
    # Measured peak activation memory per 512 px tile in inference: ~60 MB fp32, half with bf16.
    per_tile = (30 if fast else 60) * 2**20 * (config.tile_size / 512) ** 2
    return int(max(1, min(32, free * 0.5 // per_tile)))
