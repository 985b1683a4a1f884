"""MIDOG 2021 reference detector: image -> tiles -> network -> boxes -> points -> JSON.

The Python API, for notebooks and scripts:

    from midog import settle_run
    found = settle_run("weights/RetinaNetDA.pth").detector().detect("roi.tiff")
    found.mitotic_figures().xy_mm

`settle_run` (midog.pipeline.run), `Detector` (midog.detector.core), `Detections`
(midog.detector.detections), `multiple_points` (midog.results.challenge), `open_slide` (midog.slides.readers) and
`DetectorConfig` / `REFERENCE` (midog.config.settings) are importable from here. They are
loaded on first use, so that `import midog` and `midog --help` stay fast.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "Detector": "midog.detector.core",
    "Detections": "midog.detector.detections",
    "multiple_points": "midog.results.challenge",
    "settle_run": "midog.pipeline.run",
    "open_slide": "midog.slides.readers",
    "DetectorConfig": "midog.config.settings",
    "REFERENCE": "midog.config.settings",
}
__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'midog' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
