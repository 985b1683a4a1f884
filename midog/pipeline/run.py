"""One run of the detector, settled once: `settle_run` builds the frozen `RunSettings` that
`midog detect`, `midog batch`, process.py and the Python API all run with, so the same
weights give the same operating point through every door.

Each setting comes from the first of these that gives it (the order of precedence):

1. given: the command line, process.py's options, or the Python API's arguments;
2. the environment: MIDOG_THRESHOLD, MIDOG_DEVICE, MIDOG_TIME_BUDGET, MIDOG_MAX_MEGAPIXELS,
   MIDOG_MAX_CHUNK_MB, MIDOG_MAX_MEMORY_MB;
3. the model manifest beside the weights (`manifest.json`, as in model/): its
   operating point, when it lists these weights by name with their git blob hash;
4. the checkpoint's own metadata (the operating point `midog train` stored);
5. the defaults: the reference's (config.REFERENCE, slides.limits.DEFAULT_LIMITS).

Every value is checked here, where it is settled, with its source named in the error.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

from ..config import REFERENCE
from ..config.checks import check_mpp, check_positive, check_positive_int, check_probability, checked
from ..errors import UsageError
from ..slides.limits import DEFAULT_LIMITS, Limits

if TYPE_CHECKING:
    from ..detector.core import Detector
    from ..results.writers import Extras

__all__ = ["LIMIT_VARIABLES", "MODEL_MANIFEST", "RunSettings", "manifest_threshold", "run_device", "settle_run"]

log = logging.getLogger("midog.run")

MODEL_MANIFEST = "manifest.json"  # beside a checkpoint: its operating point and blob hash
# process.py names its limits by these variables in refusals; the commands by their options.
LIMIT_VARIABLES = {"max_megapixels": "MIDOG_MAX_MEGAPIXELS", "max_chunk_mb": "MIDOG_MAX_CHUNK_MB", "max_memory_mb": "MIDOG_MAX_MEMORY_MB"}


@dataclass(frozen=True)
class RunSettings:
    """Everything a run of the detector needs, settled and checked (`settle_run`)."""

    weights: Path
    threshold: float  # the operating point
    threshold_from: str  # where it came from, for the log: "--threshold", "MIDOG_THRESHOLD", a manifest, ...
    mpp: float | None = None  # overrides every file's spacing
    device: str = "auto"
    style: str = "2021"  # the challenge JSON's style (results.challenge.STYLES)
    fast: bool = False
    batch_size: int | None = None
    tissue_only: bool | None = None  # None: on for whole-slide images only
    compile: bool = False
    extras: "Extras | None" = None  # exports, count and review beside each JSON
    limits: Limits = DEFAULT_LIMITS
    time_budget: float | None = None  # seconds per image

    def detector(self, kind: "Callable[..., Detector] | None" = None) -> "Detector":
        """The detector these settings describe (`kind`: a stand-in for tests)."""
        from ..detector.core import Detector

        make = kind or Detector.from_weights
        return make(self.weights, self.device, threshold=self.threshold, fast=self.fast, batch_size=self.batch_size,
                    compile=self.compile, limits=self.limits)


def run_device(given: str | None, environ: Mapping[str, str] | None = None) -> str:
    """The device asked for: given, else MIDOG_DEVICE, else auto (CUDA when usable)."""
    return given or (os.environ if environ is None else environ).get("MIDOG_DEVICE") or "auto"


def settle_run(
    weights: Path,
    *,
    threshold: float | None = None,
    mpp: float | None = None,
    device: str | None = None,
    style: str = "2021",
    fast: bool = False,
    batch_size: int | None = None,
    tissue_only: bool | None = None,
    compile: bool = False,
    extras: "Extras | None" = None,
    max_megapixels: float | None = None,
    max_chunk_mb: float | None = None,
    max_memory_mb: float | None = None,
    time_budget: float | None = None,
    environ: Mapping[str, str] | None = None,
    option_names: Mapping[str, str] | None = None,
) -> RunSettings:
    """The run's settings from what is given (None: not given), the environment (`environ`,
    default os.environ), the manifest beside `weights`, the checkpoint's metadata and the
    defaults, in the module's order. `option_names` name each given value in errors and in
    the limits' refusals (the command line's flags by default). A bad value is a UsageError."""
    env = os.environ if environ is None else environ
    names = {"threshold": "--threshold", "mpp": "--mpp", "batch_size": "--batch-size", "time_budget": "--time-budget",
             "max_megapixels": "--max-megapixels", "max_chunk_mb": "--max-chunk-mb", "max_memory_mb": "--max-memory-mb",
             **(option_names or {})}

    def pick(name: str, given: Any, variable: str | None, check: Callable[[Any], Any]) -> tuple[Any, str | None]:
        if given is not None:
            return checked(check, given, names[name]), names[name]
        raw = env.get(variable) if variable else None
        if raw:
            return checked(check, raw, f"{variable}={raw!r}"), variable
        return None, None

    weights = Path(weights)
    if not weights.is_file():
        raise UsageError(f"{weights}: weights file not found (run `midog fetch` for the published weights)")
    point, source = pick("threshold", threshold, "MIDOG_THRESHOLD", check_probability)
    if point is None:
        point, source = manifest_threshold(weights), f"{weights.parent / MODEL_MANIFEST}"
    if point is None:
        from ..network.retinanet import read_metadata

        stored = read_metadata(weights).get("threshold")
        point, source = (checked(check_probability, stored, f"{weights}: stored threshold"), f"{weights.name}'s metadata") if stored is not None else (REFERENCE.threshold, "the reference's default")
    given_limits = {"max_megapixels": max_megapixels, "max_chunk_mb": max_chunk_mb, "max_memory_mb": max_memory_mb}
    limits = {}
    for field, variable in LIMIT_VARIABLES.items():
        value, _ = pick(field, given_limits[field], variable, check_positive)
        limits[field] = getattr(DEFAULT_LIMITS, field) if value is None else value
    budget, _ = pick("time_budget", time_budget, "MIDOG_TIME_BUDGET", check_positive)
    return RunSettings(
        weights=weights,
        threshold=float(point),
        threshold_from=str(source),
        mpp=checked(check_mpp, mpp, names["mpp"]) if mpp is not None else None,
        device=run_device(device, env),
        style=style,
        fast=fast,
        batch_size=checked(check_positive_int, batch_size, names["batch_size"]) if batch_size is not None else None,
        tissue_only=tissue_only,
        compile=compile,
        extras=extras,
        limits=replace(DEFAULT_LIMITS, **limits, mpp_option=names["mpp"], megapixels_option=names["max_megapixels"],
                       chunk_option=names["max_chunk_mb"], memory_option=names["max_memory_mb"]),
        time_budget=budget,
    )


def manifest_threshold(weights: Path) -> float | None:
    """The operating point from the model manifest beside the weights (model/manifest.json,
    which travels in the model tarball), when it lists these weights by name with their git
    blob hash. A manifest whose hash does not match the file is ignored with a warning."""
    from ..detector.weights import git_blob_sha1

    manifest = weights.parent / MODEL_MANIFEST
    if not manifest.is_file():
        return None
    try:
        data = json.loads(manifest.read_text())
        point = data.get("operating_point")
        blobs = {Path(a["dest"]).name: a["blob"].lower() for a in data.get("artefacts", [])}
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        log.warning(f"warning: ignoring {manifest}: {type(exc).__name__}: {exc}")
        return None
    if point is None:
        return None  # a manifest of where files come from (weights/manifest.json), not of an operating point
    if weights.name not in blobs:
        # The manifest describes other weights (say, a trained checkpoint put beside the
        # published one's manifest): its operating point is not theirs.
        log.info(f"note: {manifest} does not list {weights.name}; not using its operating point")
        return None
    actual = git_blob_sha1(weights)
    if actual != blobs[weights.name]:
        log.warning(f"warning: ignoring {manifest}: {weights.name} has blob {actual}, the manifest says {blobs[weights.name]}")
        return None
    log.info(f"{weights.name}: blob {actual}, as {manifest} says")
    if not isinstance(point, (int, float)) or isinstance(point, bool) or not 0 <= point <= 1:
        log.warning(f"warning: ignoring {manifest}: operating_point {point!r} is not a number in [0, 1]")
        return None
    return float(point)

