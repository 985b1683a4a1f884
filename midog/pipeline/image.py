"""`midog detect`: images -> points JSON files, through the inference core (detector.py).

The core's names are re-exported here, where process.py, the batch command and older
code import them from."""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..atomic import remove_stale_temp as remove_stale_temp
from ..detector.core import Detector as Detector
from ..detector.weights import published_weights
from ..errors import TimeBudgetError, UsageError, WriteError, image_error_line, shown

if TYPE_CHECKING:
    from ..results.writers import Extras
    from ..slides.limits import Limits


def default_weights() -> Path:
    return published_weights()


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
) -> str:
    """One image through the detector into its JSON file (written atomically); returns the
    one-line summary. `midog detect` and every batch runner write outputs through this, so
    the same image gives the same bytes whichever command ran it. `extras`: exports and
    count written beside the JSON (midog/extras.py)."""
    from ..results.writers import write_extras
    from ..results.output import multiple_points, write_json_atomic

    detections = detector.detect(image, mpp, progress, tissue_only, detector.min_score_for(style), deadline=deadline)
    result = multiple_points(detections, detector.threshold, style)
    write_json_atomic(target, result)
    extra = write_extras(result, target, image, mpp, extras, detections.spacing_mm) if extras else ""
    info = detections.info
    skipped = f", {info['tiles_skipped']} background tiles skipped" if info["tiles_skipped"] else ""
    n_mitotic = int((detections.scores > detector.threshold).sum())
    return f"{shown(image)}: {n_mitotic} mitotic figures ({info['tiles']} tiles{skipped}, {info['seconds']:.1f} s) -> {shown(target)}" + (f"; {extra}" if extra else "")


def detect_or_error(
    detector: Detector, image: Path, target: Path, *args: Any, debug: bool = False, time_budget: float | None = None, **kwargs: Any
) -> tuple[str | None, str | None]:
    """`detect_to_file` for one image of a batch: (summary, None), or (None, one-line error)
    for any failure, with no output of an earlier run left behind for that image. A full
    output disk (WriteError.disk_full) is raised instead: every later image would fail too."""
    deadline = time.monotonic() + time_budget if time_budget else None
    try:
        return detect_to_file(detector, image, target, *args, deadline=deadline, **kwargs), None
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # one image's failure, whatever it is, must not cost the others
        if debug:
            traceback.print_exc()
        try:
            target.unlink(missing_ok=True)  # a stale result would read as this run's
        except OSError:
            pass
        if isinstance(exc, WriteError) and exc.disk_full:  # every later image would fail the same way, after its whole run
            raise
        line = image_error_line(image, exc)
        if isinstance(exc, TimeBudgetError) and time_budget:
            line += f" of {time_budget:g} s"
        return None, line


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

    @classmethod
    def from_args(cls, a: argparse.Namespace) -> "DetectOptions":
        from ..results.writers import extras_from_args

        return cls(
            a.threshold, a.mpp, a.device, a.style, a.fast, a.batch_size, a.tissue_only, getattr(a, "compile", False),
            extras_from_args(a), limits_from_args(a), a.time_budget,
        )

    def check(self) -> None:
        """Numbers given in code, not through the CLI's checked types: a UsageError (exit 2)."""
        from ..config.checks import check_mpp, check_positive_int, check_probability, checked

        for value, check, name in ((self.threshold, check_probability, "--threshold"), (self.mpp, check_mpp, "--mpp"), (self.batch_size, check_positive_int, "--batch-size")):
            if value is not None:
                checked(check, value, name)

    def detector(self, weights: Path, kind: "type[Detector] | None" = None) -> Detector:
        # `Detector` looked up now, not at definition: tests replace it in this module.
        detector = (kind or Detector)(weights, self.device, self.threshold, fast=self.fast, batch_size=self.batch_size, compile=self.compile)
        if self.limits is not None:
            detector.limits = self.limits
        return detector

    def per_image(self) -> dict[str, Any]:
        """detect_or_error's keyword options for each image."""
        return {"style": self.style, "mpp": self.mpp, "tissue_only": self.tissue_only, "extras": self.extras, "time_budget": self.time_budget}


def run_detect(
    images: list[Path],
    weights: Path,
    output: str | Path | None = None,
    options: DetectOptions = DetectOptions(),
    progress: bool = True,
    debug: bool = False,
) -> int:
    """Detect on every image; a bad image is reported and skipped, never losing the others.
    Options and outputs are checked before any work (UsageError, exit 2)."""
    from tqdm import tqdm

    options.check()
    if not weights.is_file():
        raise UsageError(f"{weights}: weights file not found (run `midog fetch` for the published weights)")
    targets = output_paths(images, output)
    check_writable(targets)
    remove_stale_temp(targets)
    detector = options.detector(weights)
    failures = 0
    for image, target in tqdm(list(zip(images, targets)), desc="images", unit="image", disable=not progress or len(images) < 2):
        summary, error = detect_or_error(detector, image, target, progress=progress, debug=debug, **options.per_image())
        if error is not None:
            failures += 1
            tqdm.write(f"midog detect: error: {error}", file=sys.stderr)
            continue
        tqdm.write(summary, file=sys.stderr)
    if failures:
        print(f"midog detect: {failures} of {len(images)} images failed", file=sys.stderr)
    return 1 if failures else 0


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("detect", help="detect mitotic figures and write Multiple points JSON")
    p.add_argument("images", nargs="+", type=Path, metavar="IMAGE")
    p.add_argument(
        "--output", "-o", default=None,
        help="output file (one image), or folder (several images, an existing folder, or a path ending in /); default: ./<image stem>.json",
    )
    p.add_argument("--compile", action="store_true", help="torch.compile the network: faster on large images after ~10 s of start-up; needs a C++ compiler")
    add_detection_args(p)
    p.set_defaults(
        run=lambda a: run_detect(
            a.images, a.weights or default_weights(), a.output, DetectOptions.from_args(a), a.progress, debug=getattr(a, "debug", False)
        )
    )


def add_detection_args(p: argparse.ArgumentParser) -> None:
    """The options of every command that runs the detector on images (`midog detect`,
    `midog batch`): weights, operating point, spacing, device, style, modes, extras, limits."""
    from ..config import checks as options
    from ..results.writers import add_extras_cli

    p.add_argument("--weights", type=Path, default=None, help="weights file (default: the published weights fetched by `midog fetch`)")
    p.add_argument("--threshold", type=options.probability, default=None, help="operating point in [0, 1] (default: the checkpoint's, else 0.64)")
    p.add_argument("--mpp", type=options.mpp, default=None, help="micrometres per pixel, overriding or replacing the file's resolution")
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu or cuda[:N]")
    p.add_argument("--style", choices=["2021", "2022"], default="2021", help="2021: points above threshold; 2022: all candidates with probability and name")
    p.add_argument("--fast", action="store_true", help="channels-last + bfloat16/float16 autocast: faster, scores differ slightly from the reference")
    p.add_argument("--batch-size", type=options.positive_int, default=None, help="tiles per batch (default on CPU: 4, or 10 with --fast; on GPU: by free memory)")
    tissue = p.add_mutually_exclusive_group()
    tissue.add_argument("--tissue-only", dest="tissue_only", action="store_true", default=None, help="skip background tiles (default for whole-slide images)")
    tissue.add_argument("--all-tiles", dest="tissue_only", action="store_false", help="run every tile (default for region TIFFs)")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    add_extras_cli(p)
    add_limit_args(p)


def add_limit_args(p: argparse.ArgumentParser) -> None:
    """The per-image limits and time budget, for every command that runs the detector."""
    from ..config import checks as options
    from ..slides.readers import DEFAULT_LIMITS as L

    g = p.add_argument_group("limits (an image beyond them is refused, the others still run)")
    g.add_argument("--max-megapixels", type=options.positive, default=L.max_megapixels, help=f"image size (default {L.max_megapixels:g})")
    g.add_argument("--max-chunk-mb", type=options.positive, default=L.max_chunk_mb, help=f"one decoded TIFF tile or strip (default {L.max_chunk_mb:g})")
    g.add_argument("--max-memory-mb", type=options.positive, default=L.max_memory_mb, help=f"an image decoded whole, e.g. PNG (default {L.max_memory_mb:g})")
    g.add_argument("--time-budget", type=options.positive, default=None, metavar="SECONDS", help="stop an image after this long; it becomes that image's error (default: none)")


def limits_from_args(args: argparse.Namespace) -> "Any":
    from dataclasses import replace

    from ..slides.readers import DEFAULT_LIMITS

    return replace(DEFAULT_LIMITS, max_megapixels=args.max_megapixels, max_chunk_mb=args.max_chunk_mb, max_memory_mb=args.max_memory_mb)
