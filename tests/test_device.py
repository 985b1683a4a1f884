"""midog/device.py: the device choice never hides an unusable NVIDIA GPU. The GPU, its
driver and torch's CUDA are faked, so these checks run on any machine."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from midog.detector import device
from midog.errors import MidogError

PROC_OLD = "NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.104.05  Sat Aug 19 01:15:15 UTC 2023\nGCC version:  gcc version 12.2.0\n"
PROC_OPEN = "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.159.04  Release Build  (dvs-builder@U16)\n"


def test_driver_version_from_proc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(device.shutil, "which", lambda name: None)  # no nvidia-smi either
    proc = tmp_path / "version"
    proc.write_text(PROC_OLD)
    assert device.nvidia_driver(proc) == "535.104.05"
    proc.write_text(PROC_OPEN)
    assert device.nvidia_driver(proc) == "580.159.04"
    monkeypatch.setattr(device.Path, "exists", lambda self: False)  # no /dev/nvidia0 here
    assert device.nvidia_driver(tmp_path / "absent") is None


def test_problem_names_driver_found_and_needed_and_cpu_time() -> None:
    problem = device.cuda_problem("535.104.05", "13.0", cuda_available=False)
    assert "driver 535.104.05 found" in problem and "580.65.06 or newer" in problem and "CUDA 13.0" in problem
    assert f"{device.CPU_SECONDS_PER_IMAGE} s per" in problem
    # A CUDA 12 build runs on that driver: then the cause is elsewhere (device not passed in).
    problem = device.cuda_problem("535.104.05", "12.6", cuda_available=False)
    assert "525.60.13 or newer" in problem and "--gpus all" in problem
    assert "CPU-only build" in device.cuda_problem("535.104.05", None, cuda_available=False)
    assert device.cuda_problem(None, "12.6", cuda_available=False) is None  # no GPU: nothing to say
    assert device.cuda_problem("580.159.04", "13.0", cuda_available=True) is None


@pytest.fixture()
def unusable_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """An NVIDIA GPU with driver 535 on a machine whose torch was built for CUDA 13.0."""
    monkeypatch.setattr(device, "nvidia_driver", lambda *a: "535.104.05")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.version, "cuda", "13.0")


def test_auto_falls_back_loudly(unusable_gpu: None, capsys: pytest.CaptureFixture[str]) -> None:
    assert device.pick_device("auto") == torch.device("cpu")
    err = capsys.readouterr().err
    assert "WARNING: an NVIDIA GPU is present but PyTorch cannot use it" in err
    assert "driver 535.104.05 found" in err and "580.65.06" in err and "--device cuda" in err


def test_cuda_refuses_to_fall_back(unusable_gpu: None) -> None:
    with pytest.raises(MidogError, match=r"--device cuda was asked for, but an NVIDIA GPU is present.*driver 535\.104\.05 found"):
        device.pick_device("cuda")


def test_cpu_only_machine_is_quiet(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(device, "nvidia_driver", lambda *a: None)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert device.pick_device("auto") == torch.device("cpu")
    assert capsys.readouterr().err == ""
    with pytest.raises(MidogError, match="sees no CUDA device"):
        device.pick_device("cuda:1")
    with pytest.raises(MidogError, match="'tpu'"):
        device.pick_device("tpu")


def test_runtime_line_names_versions_and_cpu() -> None:
    line = device.describe_runtime(torch.device("cpu"))
    assert line.startswith(f"torch {torch.__version__} (") and "running on CPU" in line
    assert (f"CUDA {torch.version.cuda}" if torch.version.cuda else "CPU-only build") in line


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_runtime_line_names_gpu_and_driver() -> None:
    line = device.describe_runtime(torch.device("cuda"))
    assert torch.cuda.get_device_name(0) in line and "driver " in line
