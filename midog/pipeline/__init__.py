"""Images in, result files out: one image end to end with its errors contained (`image`),
a cohort on Ray workers (`batch`, needs the `distributed` extra), and what a batch reads,
names and resumes (`inputs`)."""

from __future__ import annotations

from .image import DetectOptions, Outcome, detect_or_error, detect_to_file
from .batch import run_batch

__all__ = ["DetectOptions", "Outcome", "detect_or_error", "detect_to_file", "run_batch"]
