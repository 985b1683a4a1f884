"""One image end to end: the detector's `Detections`, written as the result JSON and its
extras (results.writers), with any failure turned into that image's one-line error.
`midog detect`, `midog batch`'s workers and process.py all run images through here.

`Detector` is re-exported here, where process.py and older code import it from."""

from __future__ import annotations

import os
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from ..atomic import remove_stale_temp as remove_stale_temp
from ..detector.core import Detector as Detector
from ..errors import TimeBudgetError, UsageError, WriteError, image_error_line, shown

if TYPE_CHECKING:
    from ..results.writers import Extras
    from ..slides.limits import Limits


def output_paths(images: list[Path], output: str | Path | None) -> list[Path]:
    """One image: `output` is the file, unless it is an existing folder or ends in a slash,
    which mean `<output>/<stem>.json`. Several images: `output` is a folder of `<stem>.json`."""
    is_folder = output is not None and (str(output).endswith(("/", os.sep)) or Path(output).is_dir())
    if len(images) == 1 and output is not None and not is_folder:
        return [Path(output)]
    folder = Path(output) if output is not None else Path(".")
    stems = [p.stem for p in images]
    if len(set(stems)) != len(stems):
        raise UsageError("several input images share a file name stem; their outputs would overwrite each other")
    return [folder / f"{stem}.json" for stem in stems]


def check_writable(targets: list[Path]) -> None:
    """Before any detection: every output's folder exists (or is made) and takes files."""
    import tempfile

    for folder in dict.fromkeys(t.parent for t in targets):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=folder):
                pass
        except (FileExistsError, NotADirectoryError):
            blocker = next((p for p in [folder, *folder.parents] if p.exists() and not p.is_dir()), folder)
            raise UsageError(f"cannot write outputs to {folder}: {blocker} is a file, not a folder") from None
        except OSError as exc:
            raise UsageError(f"cannot write outputs to {folder}: {exc.strerror or exc}") from None
    for target in targets:
        if target.is_dir():
            raise UsageError(f"cannot write {target}: it is a folder")


class Outcome(NamedTuple):
    """How one image went: its summary line, or its one-line error; the detector's run
    info (tiles run and skipped, seconds) when it got that far."""

    summary: str | None
    error: str | None
    info: dict[str, Any]


def detect_to_file(
    detector: Detector,
    image: Path,
    target: Path,
    style: str = "2021",
    mpp: float | None = None,
    progress: bool = False,
    tissue_only: bool | None = None,
    extras: "Extras | None" = None,
    deadline: float | None = None,
) -> tuple[str, dict[str, Any]]:
    """One image through the detector into its JSON file and extras (written atomically);
    returns the one-line summary and the run info. The image is opened once: what the
    extras need of it (spacing, size, the count's thumbnail) comes with the detections."""
    from ..results.challenge import min_score_for
    from ..results.sidecar import weights_sha256
    from ..results.writers import write_result

    thumbnail_side = extras.thumbnail_side if extras else None
    min_score = min_score_for(style, detector.threshold, detector.candidate_threshold)
    detections = detector.detect(image, mpp=mpp, progress=progress, tissue_only=tissue_only, min_score=min_score, deadline=deadline, thumbnail_side=thumbnail_side)
    extra = write_result(detections, target, style, extras, weights_sha256(getattr(detector, "source", None)))
    info = detections.info
    skipped = f", {info['tiles_skipped']} background tiles skipped" if info["tiles_skipped"] else ""
    n_mitotic = int(detections.mitotic.sum())
    summary = f"{shown(image)}: {n_mitotic} mitotic figures ({info['tiles']} tiles{skipped}, {info['seconds']:.1f} s) -> {shown(target)}" + (f"; {extra}" if extra else "")
    return summary, info


def detect_or_error(
    detector: Detector, image: Path, target: Path, *args: Any, debug: bool = False, time_budget: float | None = None, **kwargs: Any
) -> Outcome:
    """`detect_to_file` for one image of a batch: its summary, or a one-line error for any
    failure, with no output of an earlier run left behind for that image. A full output
    disk (WriteError.disk_full) is raised instead: every later image would fail too."""
    deadline = time.monotonic() + time_budget if time_budget else None
    try:
        summary, info = detect_to_file(detector, image, target, *args, deadline=deadline, **kwargs)
        return Outcome(summary, None, info)
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # one image's failure, whatever it is, must not cost the others
        if debug:
            traceback.print_exc()
        from ..results.sidecar import sidecar_path

        try:
            target.unlink(missing_ok=True)  # a stale result would read as this run's
            sidecar_path(target).unlink(missing_ok=True)
        except OSError:
            pass
        if isinstance(exc, WriteError) and exc.disk_full:  # every later image would fail the same way, after its whole run
            raise
        line = image_error_line(image, exc)
        if isinstance(exc, TimeBudgetError) and time_budget:
            line += f" of {time_budget:g} s"
        return Outcome(None, line, {})


@dataclass(frozen=True)
class DetectOptions:
    """How `midog detect` and `midog batch` run the detector on each image: the detector's
    settings, what each image's outputs hold, and the limits that refuse an image."""

    threshold: float | None = None  # operating point; None: the checkpoint's, else 0.64
    mpp: float | None = None  # overrides the files' spacing
    device: str = "auto"
    style: str = "2021"
    fast: bool = False
    batch_size: int | None = None
    tissue_only: bool | None = None  # None: on for whole-slide images only
    compile: bool = False
    extras: "Extras | None" = None  # exports and count beside each JSON
    limits: "Limits | None" = None  # None: DEFAULT_LIMITS
    time_budget: float | None = None  # seconds per image

    def check(self) -> None:
        """Numbers given in code, not through the CLI's checked types: a UsageError (exit 2)."""
        from ..config.checks import check_mpp, check_positive_int, check_probability, checked

        for value, check, name in ((self.threshold, check_probability, "--threshold"), (self.mpp, check_mpp, "--mpp"), (self.batch_size, check_positive_int, "--batch-size")):
            if value is not None:
                checked(check, value, name)

    def detector(self, weights: Path, kind: "type[Detector] | None" = None) -> Detector:
        # `Detector` looked up now, not at definition: tests replace it in this module.
        from ..slides.limits import DEFAULT_LIMITS

        return (kind or Detector).from_weights(weights, self.device, threshold=self.threshold, fast=self.fast, batch_size=self.batch_size,
                                               compile=self.compile, limits=self.limits or DEFAULT_LIMITS)

    def per_image(self) -> dict[str, Any]:
        """detect_or_error's keyword options for each image."""
        return {"style": self.style, "mpp": self.mpp, "tissue_only": self.tissue_only, "extras": self.extras, "time_budget": self.time_budget}


