"""The house's layering: each subpackage of midog/ imports only itself and the layers below
it (slides and network below the detector, the detector below results, results below the
pipeline, everything below the commands), and no modules import each other in a circle.

Every import counts, also those inside functions (the lazy ones that keep `midog --help`
fast): a lazy import that climbs is still a climb."""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "midog"

# Bottom to top. Boxes on one line are siblings: neither may import the other.
LAYERS = [
    ("errors",),  # imports nothing of midog: atomic's WriteError and lock refusal are MidogErrors
    ("atomic",),
    ("config",),
    ("slides", "network"),
    ("detector",),
    ("results",),
    ("evaluation", "synth"),
    ("pipeline",),
    ("training",),
    ("commands",),
    ("__main__",),
]
RANK = {box: rank for rank, boxes in enumerate(LAYERS) for box in boxes}


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, root: Path) -> list[tuple[int, str]]:
    """(line, absolute module) of every import statement in the file that names midog."""
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "midog"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "midog":
                continue
            # `from . import x` may import a module x: count it as an import of that module.
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                is_module = (root.parent / Path(*sub.split("."))).with_suffix(".py").is_file() or (root.parent / Path(*sub.split("."))).is_dir()
                found.append((node.lineno, sub if is_module else target))
    return found


def box(module: str) -> str:
    """The subpackage (or top-level module) a module belongs to; "" for the package root."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def wrong_way_imports(root: Path = PACKAGE) -> list[str]:
    problems = []
    for path in sorted(root.rglob("*.py")):
        here = box(module_name(path, root))
        if here == "":
            continue  # the package root only hands the public names on, lazily
        if here not in RANK:
            problems.append(f"{path.relative_to(root.parent)}: {here!r} is in no layer of this test's LAYERS")
            continue
        for line, target in imports(path, root):
            there = box(target)
            if there in ("", here):
                continue  # `from .. import __version__`, or within the subpackage
            if there not in RANK or RANK[there] >= RANK[here]:
                problems.append(f"{path.relative_to(root.parent)}:{line}: {here} imports {target} ({there} is not below {here})")
    return problems


def import_circles(root: Path = PACKAGE) -> list[list[str]]:
    """Strongly connected groups of modules (Tarjan), over every import."""
    graph: dict[str, set[str]] = {}
    modules = {module_name(p, root): p for p in root.rglob("*.py")}
    for name, path in modules.items():
        graph[name] = {t for _, t in imports(path, root) if t in modules and t != name and not name.endswith(".__main__")}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    circles = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                circles.append(sorted(group))

    for v in graph:
        if v not in index:
            visit(v)
    return circles


def test_every_import_goes_down_the_layers():
    assert wrong_way_imports() == []


def test_no_import_circles():
    assert import_circles() == []


def test_the_check_fails_on_a_wrong_way_import(tmp_path):
    copy = tmp_path / "midog"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__", "*.pth"))
    readers = copy / "slides" / "readers.py"
    readers.write_text(readers.read_text() + "\n\ndef _climb():\n    from ..results.count import count\n")
    problems = wrong_way_imports(copy)
    assert len(problems) == 1 and "slides imports midog.results.count" in problems[0]
    # and a circle: results.count importing the overlay that imports it
    count = copy / "results" / "count.py"
    count.write_text(count.read_text() + "\n\ndef _draw():\n    from .overlay import draw_overlay\n")
    assert ["midog.results.count", "midog.results.overlay"] in import_circles(copy)


def test_process_py_is_a_thin_adapter():
    """The container's entry point finds the layout and the model, settles the run and hands
    images to the pipeline: it reaches the detector core, the readers and the network only
    through it."""
    process = PACKAGE.parent / "process.py"
    assert len(process.read_text().splitlines()) < 200
    targets = {target for _, target in imports(process, PACKAGE)}
    assert "midog.pipeline.run" in targets and "midog.pipeline.image" in targets
    assert not {t for t in targets if box(t) in ("slides", "network") or t == "midog.detector.core"}, targets


def test_listing_shows_the_data_path():
    entries = sorted(p.name for p in PACKAGE.iterdir() if p.name != "__pycache__")
    assert len(entries) <= 14, entries
    too_long = [str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py") if len(p.read_text().splitlines()) > 400]
    assert too_long == []


def test_old_flat_module_paths_are_gone():
    """The flat layout's module paths (midog.detect, midog.slide, ...) were kept for the 0.2
    release only; they import no more, and nothing maps them."""
    import importlib

    import midog

    for old in ("midog.detect", "midog.slide", "midog.detections", "midog.output", "midog.exports"):
        with pytest.raises(ModuleNotFoundError):
            importlib.import_module(old)
    assert not hasattr(midog, "MOVED")
