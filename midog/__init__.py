"""MIDOG 2021 reference detector: image -> tiles -> network -> boxes -> points -> JSON.

The Python API, for notebooks and scripts:

    from midog import Detector
    found = Detector("weights/RetinaNetDA.pth").detect("roi.tiff")
    found.mitotic_figures().points_mm()

`Detector` (midog.detector), `Detections` (midog.detections), `open_slide` (midog.slide)
and `DetectorConfig` / `REFERENCE` (midog.config) are importable from here. They are
loaded on first use, so that `import midog` and `midog --help` stay fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "Detector": "midog.detector",
    "Detections": "midog.detections",
    "open_slide": "midog.slide",
    "DetectorConfig": "midog.config",
    "REFERENCE": "midog.config",
}
__all__ = ["__version__", *_EXPORTS]

if TYPE_CHECKING:  # what type checkers and IDEs see; at run time __getattr__ loads them
    from .config import REFERENCE, DetectorConfig
    from .detector import Detector
    from .detections import Detections
    from .slide import open_slide


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'midog' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
