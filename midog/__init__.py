"""MIDOG 2021 reference detector: image -> tiles -> network -> boxes -> points -> JSON.

The Python API, for notebooks and scripts:

    from midog import Detector
    found = Detector.from_weights("weights/RetinaNetDA.pth").detect("roi.tiff")
    found.mitotic_figures().xy_mm

`Detector` (midog.detector.core), `Detections` (midog.detector.detections),
`multiple_points` (midog.results.challenge), `open_slide` (midog.slides.readers) and
`DetectorConfig` / `REFERENCE` (midog.config.settings) are importable from here. They are
loaded on first use, so that `import midog` and `midog --help` stay fast.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import types
import warnings
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "Detector": "midog.detector.core",
    "Detections": "midog.detector.detections",
    "multiple_points": "midog.results.challenge",
    "open_slide": "midog.slides.readers",
    "DetectorConfig": "midog.config.settings",
    "REFERENCE": "midog.config.settings",
}
__all__ = ["__version__", *_EXPORTS]


# Modules of the flat layout (before 0.2) -> their place now. Old imports keep working for
# one release, with a DeprecationWarning that names the new path.
MOVED = {
    "midog.slide": "midog.slides.readers",
    "midog.pixels": "midog.slides.pixels",
    "midog.spacing": "midog.slides.spacing",
    "midog.limits": "midog.slides.limits",
    "midog.tiff_layout": "midog.slides.tiff_layout",
    "midog.tissue": "midog.slides.tissue",
    "midog.config_cli": "midog.config.fields",
    "midog.options": "midog.config.checks",
    "midog.anchors": "midog.network.anchors",
    "midog.box_coding": "midog.network.box_coding",
    "midog.postprocess": "midog.network.postprocess",
    "midog.tiles": "midog.detector.tiles",
    "midog.device": "midog.detector.device",
    "midog.fetch": "midog.detector.weights",
    "midog.detections": "midog.detector.detections",
    "midog.output": "midog.results.challenge",
    "midog.points": "midog.results.reader",
    "midog.exports": "midog.results.exports",
    "midog.extras": "midog.results.writers",
    "midog.count": "midog.results.count",
    "midog.hotspot": "midog.results.hotspot",
    "midog.overlay": "midog.results.overlay",
    "midog.detect": "midog.pipeline.image",
    "midog.batch": "midog.pipeline.batch",
    "midog.batch_inputs": "midog.pipeline.inputs",
    "midog.cli": "midog.commands.cli",
    "midog.demo": "midog.commands.demo",
    "midog.evaluation.cli": "midog.commands.evaluate",
    "midog.training.cli": "midog.commands.train",
    "midog.synth.cli": "midog.commands.synth",
}


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports an old module path as the module that now lives at the new one."""

    def find_spec(self, name: str, path: object = None, target: object = None) -> importlib.machinery.ModuleSpec | None:
        return importlib.util.spec_from_loader(name, self) if name in MOVED else None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        warnings.warn(f"{spec.name} has moved to {MOVED[spec.name]}; the old path goes in the next release", DeprecationWarning, stacklevel=2)
        module = importlib.import_module(MOVED[spec.name])
        self._spec = module.__spec__  # importlib stamps the old name's spec on it: undone below
        return module

    def exec_module(self, module: types.ModuleType) -> None:
        module.__spec__ = self._spec


sys.meta_path.append(_MovedModules())


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'midog' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
