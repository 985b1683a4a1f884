"""One image end to end: the detector's `Detections` under a run's settings (`run`), written
as the result JSON and its extras (results.writers), or handed back as the challenge's
answer, with any failure turned into that image's one-line error. `midog detect`,
`midog batch`'s workers and process.py all run images through here."""

from __future__ import annotations

import os
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from ..errors import TimeBudgetError, UsageError, WriteError, image_error_line, shown
from .run import RunSettings

if TYPE_CHECKING:
    from ..detector.core import Detector
    from ..detector.detections import Detections


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
    info (tiles run and skipped, seconds) when it got that far; and, when no file was asked
    for, the challenge's answer (the "Multiple points" dict of the run's style)."""

    summary: str | None
    error: str | None
    info: dict[str, Any]
    answer: dict[str, Any] | None = None


def detect_image(detector: "Detector", image: Path, run: RunSettings, progress: bool = False, thumbnail_side: int | None = None) -> "Detections":
    """The image's candidates as far down as the run's output style lists them, within its
    time budget, at its spacing override and tissue rule."""
    from ..results.challenge import min_score_for

    deadline = time.monotonic() + run.time_budget if run.time_budget else None
    return detector.detect(
        image, mpp=run.mpp, progress=progress, tissue_only=run.tissue_only, deadline=deadline, thumbnail_side=thumbnail_side,
        min_score=min_score_for(run.style, detector.threshold, detector.candidate_threshold),
    )


def summary_line(image: Path, detections: "Detections", target: Path | None = None, extra: str = "") -> str:
    info = detections.info
    skipped = f", {info['tiles_skipped']} background tiles skipped" if info["tiles_skipped"] else ""
    to = f" -> {shown(target)}" if target is not None else f", {len(detections)} points"
    return f"{shown(image)}: {int(detections.mitotic.sum())} mitotic figures ({info['tiles']} tiles{skipped}, {info['seconds']:.1f} s){to}" + (f"; {extra}" if extra else "")


def detect_to_file(detector: "Detector", image: Path, target: Path, run: RunSettings, progress: bool = False) -> Outcome:
    """One image through the detector into its JSON file and extras (written atomically).
    The image is opened once: what the extras need of it (spacing, size, the count's
    thumbnail) comes with the detections."""
    from ..results.sidecar import weights_sha256
    from ..results.writers import write_result

    thumbnail_side = run.extras.thumbnail_side if run.extras else None
    detections = detect_image(detector, image, run, progress, thumbnail_side)
    extra = write_result(detections, target, run.style, run.extras, weights_sha256(getattr(detector, "source", None)))
    return Outcome(summary_line(image, detections, target, extra), None, detections.info)


def detect_to_answer(detector: "Detector", image: Path, run: RunSettings, progress: bool = False) -> Outcome:
    """One image through the detector to the challenge's answer, written by the caller
    (process.py gathers every image's into one file)."""
    from ..results.challenge import multiple_points

    detections = detect_image(detector, image, run, progress)
    return Outcome(summary_line(image, detections), None, detections.info, multiple_points(detections, run.style))


def detect_or_error(detector: "Detector", image: Path, target: Path | None, run: RunSettings, progress: bool = False, debug: bool = False) -> Outcome:
    """One image of a batch into `target` (None: to its answer): its summary, or a one-line
    error for any failure, with no output of an earlier run left behind for that image. A
    full output disk (WriteError.disk_full) is raised instead: every later image would fail too."""
    try:
        if target is None:
            return detect_to_answer(detector, image, run, progress)
        return detect_to_file(detector, image, target, run, progress)
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # one image's failure, whatever it is, must not cost the others
        if debug:
            traceback.print_exc()
        from ..results.sidecar import sidecar_path

        try:
            if target is not None:
                target.unlink(missing_ok=True)  # a stale result would read as this run's
                sidecar_path(target).unlink(missing_ok=True)
        except OSError:
            pass
        if isinstance(exc, WriteError) and exc.disk_full:  # every later image would fail the same way, after its whole run
            raise
        line = image_error_line(image, exc)
        if isinstance(exc, TimeBudgetError) and run.time_budget:
            line += f" of {run.time_budget:g} s"
        return Outcome(None, line, {})
