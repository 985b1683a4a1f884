"""The package as users install it: `pip install .` (not editable) into a fresh venv, then
`midog` run from another folder.

A full install would download or copy ~5.5 GB of torch and take minutes, so the fresh venv
reaches the dependencies already installed in the running environment through a path entry
(not a site folder: that environment's own editable `midog` stays inactive), and the wheel
built from this checkout is installed with `--no-deps`. What the test proves is what such
an install needs of the package itself: its metadata (`pip show` lists torch among the
requirements), its package data (the demo model, the artefact manifest) and code that finds
everything without the checkout. About 30 s on 2 cores.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import pytest

from conftest import ROOT

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def requirement_pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            pins[name.lower().replace("_", "-")] = version
    return pins


def test_dependencies_agree_with_requirements_txt() -> None:
    """Every declared dependency is pinned in requirements.txt (what the container and CI
    install) at a version it accepts, so `pip install .` and `pip install -r` agree."""
    from packaging.requirements import Requirement

    pins = requirement_pins()
    project = PYPROJECT["project"]
    declared = [Requirement(r) for r in project["dependencies"]]
    declared += [Requirement(r) for extra in ("reports",) for r in project["optional-dependencies"][extra]]
    names = {r.name.lower() for r in declared}
    assert {"torch", "torchvision", "numpy", "evalutils", "tiffslide", "simpleitk"} <= names
    for req in declared:
        key = req.name.lower().replace("_", "-")
        assert key in pins, f"{req.name} is declared in pyproject.toml but not pinned in requirements.txt"
        assert req.specifier.contains(pins[key], prereleases=True), f"requirements.txt pins {req.name}=={pins[key]}, outside {req}"
    assert "torch==2.14.1" in project["dependencies"]


def test_every_subpackage_is_listed() -> None:
    """The package list is explicit (for the weights/ package-data mapping): a new
    subpackage must be added to it, or a non-editable install would lack it."""
    listed = set(PYPROJECT["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "midog").rglob("__init__.py")}
    assert found <= listed, f"add {sorted(found - listed)} to [tool.setuptools] packages in pyproject.toml"


def run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: int = 600) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{cmd}\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """(venv, environment): a fresh venv holding `pip install --no-deps` of this checkout's
    wheel, with a clean environment (no PYTHONPATH, MIDOG_HOME in a temporary folder)."""
    pytest.importorskip("setuptools", reason="building the wheel without network needs setuptools in this environment")
    tmp = tmp_path_factory.mktemp("install")
    src = tmp / "src"
    # Only what a source distribution holds: no fetched weights, no venv, no caches.
    shutil.copytree(ROOT / "midog", src / "midog", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    (src / "weights").mkdir()
    for name in ("demo-synthetic.pth", "demo-results.md", "manifest.json"):
        shutil.copy(ROOT / "weights" / name, src / "weights")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["MIDOG_HOME"] = str(tmp / "home")
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    # --no-build-isolation: setuptools from this environment, so no network is needed.
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp / "dist"), str(src)], tmp, env)
    [wheel] = (tmp / "dist").glob("midog-*.whl")
    venv = tmp / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)], tmp, env)
    purelib = Path(run([str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], tmp, env).stdout.strip())
    outer = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (purelib / "_outer_dependencies.pth").write_text("".join(f"{p}\n" for p in sorted(outer)))
    run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "--no-deps", "--no-index", str(wheel)], tmp, env)
    return venv, env


def test_pip_show_lists_torch(installed: tuple[Path, dict[str, str]]) -> None:
    venv, env = installed
    out = run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "show", "midog"], venv, env).stdout
    requires = re.search(r"^Requires: (.*)$", out, re.M)
    assert requires and "torch" in [r.strip() for r in requires.group(1).split(",")], out
    assert re.search(rf"^Location: {re.escape(str(venv))}", out, re.M), out


def test_installed_package_is_self_contained(installed: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    venv, env = installed
    code = "import json, midog, midog.commands.demo, midog.detector.weights; print(json.dumps([midog.__file__, str(midog.commands.demo.DEMO_WEIGHTS), str(midog.detector.weights.midog_home())]))"
    package, demo_weights, home = json.loads(run([str(venv / "bin" / "python"), "-c", code], tmp_path, env).stdout)
    assert package.startswith(str(venv)), "the installed copy must be imported, not the checkout"
    assert demo_weights.startswith(str(venv)) and Path(demo_weights).stat().st_size > 1_000_000
    assert home == env["MIDOG_HOME"]
    listing = run([str(venv / "bin" / "midog"), "fetch", "--list"], tmp_path, env).stdout
    assert re.search(r"^weights\s+missing\s+weights/RetinaNetDA.pth", listing, re.M), listing


def test_installed_midog_detect_reproduces_a_reference_vector(installed: tuple[Path, dict[str, str]], tmp_path: Path, vectors_dir: Path, vector_weights: Path) -> None:
    venv, env = installed
    name = "synthC_512x512"
    run([str(venv / "bin" / "midog"), "detect", str(vectors_dir / f"{name}.tiff"), "--weights", str(vector_weights),
         "-o", "out.json", "--device", "cpu", "--no-progress"], tmp_path, env)
    # The reference's 2021 output, byte for byte as the core's parity test holds it.
    assert json.loads((tmp_path / "out.json").read_text()) == json.loads((vectors_dir / f"{name}.expected_2021.json").read_text())


def test_installed_midog_train_help(installed: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    venv, env = installed
    out = run([str(venv / "bin" / "midog"), "train", "--help"], tmp_path, env).stdout
    assert "--out" in out
