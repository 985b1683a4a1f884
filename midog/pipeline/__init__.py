"""Images in, result files out: a run's settings settled once (`run`), one image end to end
with its errors contained (`image`), the Grand Challenge container's layout (`container`),
a cohort on Ray workers (`batch`, needs the `distributed` extra), and what a batch reads,
names and resumes (`inputs`)."""

from __future__ import annotations

from .image import Outcome, detect_or_error, detect_to_answer, detect_to_file
from .batch import run_batch
from .run import RunSettings, settle_run

__all__ = ["Outcome", "RunSettings", "detect_or_error", "detect_to_answer", "detect_to_file", "run_batch", "settle_run"]
