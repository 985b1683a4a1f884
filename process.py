"""Grand Challenge entry point: `python -m process` (the container) or
`python process.py --input DIR --output DIR [--weights FILE] [--model-dir DIR] [--threshold T]` (local use).

An evalutils `DetectionAlgorithm`, the frame the platform's users know: it finds the layout
and the model (midog.pipeline.container), settles the run as `midog detect` does (midog.pipeline.run:
the same weights give the same operating point) and hands each image to the shared per-image
pipeline (midog.pipeline.image). container/README.md describes interfaces, options and outputs.

Exit status: 0 when every image gave a result, 1 when any image failed (the others still
have theirs), 2 when nothing could run (no images, no weights, bad options).
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import replace
import os
import sys
from pathlib import Path
from typing import Any

from evalutils import DetectionAlgorithm
from evalutils.exceptions import FileLoaderError
from evalutils.io import FileLoader

from midog.atomic import output_lock, remove_stale_temp
from midog.commands.args import positive as positive_arg
from midog.commands.args import probability as probability_arg
from midog.commands.cli import setup_logging
from midog.detector.device import describe_runtime, pick_device
from midog.errors import MidogError, describe, exit_status, shown, signals_interrupt
from midog.pipeline.container import CASES_FILE, IMAGE_SUFFIXES, RESULT_FILE, find_layout, find_weights, inside, opens_a_slide, report_cases, write_cases
from midog.pipeline.image import Outcome, detect_or_error
from midog.pipeline.run import LIMIT_VARIABLES, RunSettings, run_device, settle_run
from midog.results.challenge import STYLES as CORE_STYLES

DEFAULT_INPUT, DEFAULT_OUTPUT = Path("/input"), Path("/output")
# Grand Challenge extracts an algorithm's uploaded model tarball here; it beats the baked-in
# weights, model/ beside this file (/opt/app/model/ in the image, for an image uploaded alone).
DEFAULT_MODEL_DIR = Path("/opt/ml/model")
BAKED_MODEL_DIR = Path(__file__).resolve().parent / "model"
# The core's 2021 and 2022 styles, and 2025 = 2022 under the MIDOG 2025 template's top-level name.
STYLES = (*CORE_STYLES, "2025")
POINTS_NAME = "Points of interest"


class _Prefixed(logging.LoggerAdapter):
    """Lines start with "process:" (under midog's logger: shown, as the platform shows stderr)."""

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        return f"process: {msg}", kwargs


log = _Prefixed(logging.getLogger("midog.process"), {})


class ImageFileLoader(FileLoader):
    """Accepts image files by name only; the detection core reads them later. (evalutils'
    SimpleITKLoader would read every image whole just to hash it, and drop unreadable files
    with a log line: a damaged image must instead reach `process_case`, as its error.)"""

    def __init__(self, root: Path) -> None:
        self.root = root

    def load(self, *, fname: Path) -> list[dict[str, Any]]:
        name = fname.relative_to(self.root).as_posix()
        if not inside(fname, self.root):
            # A symbolic link (of the file or a folder above it) that leads out of the input
            # folder: never read; for an image, that image's error.
            reason = f"{shown(fname)}: a symbolic link that leads outside {self.root}; not read"
            if fname.suffix.lower() in IMAGE_SUFFIXES:
                return [{"path": fname, "filename": name, "refused": reason}]
            log.warning(f"warning: {reason}")
            return []
        if fname.is_dir() or not opens_a_slide(fname):  # a DICOM slide's other files: its first opens it
            return []
        if fname.suffix.lower() not in IMAGE_SUFFIXES:
            log.info(f"skipping {shown(name)}: not an image file")
            return []
        if fname.suffix.lower() == ".dcm" and fname != min(fname.parent.glob("*.dcm")):
            return []  # a DICOM slide is a folder of files: its first file opens the whole series
        return [{"path": fname, "filename": name, "refused": None}]


class MitoticFigureDetection(DetectionAlgorithm):
    def __init__(self, input_dir: Path, output_dir: Path, run: RunSettings, style: str = "auto", weights_source: str = "given") -> None:
        layout, image_dir = find_layout(input_dir)
        self.output_dir, self.image_dir = output_dir, image_dir
        self.style = layout if style == "auto" else style
        # The 2025 answer is the 2022 one under a top-level name.
        self.run = replace(run, style="2022" if self.style == "2025" else self.style)
        self.weights_source = weights_source
        # No UniqueImagesValidator: two identical images are two cases that each get their
        # result; rejecting the whole run for it would lose results.
        super().__init__(file_loaders={"input_image": ImageFileLoader(input_dir)}, validators={}, input_path=image_dir,
                         output_path=output_dir, output_file=output_dir / CASES_FILE)
        log.info(f"{layout} interface: images under {image_dir}; output style {self.style}")

    def process(self) -> int:
        """Run every case; returns the number of images that failed."""
        if not self.image_dir.is_dir():
            raise MidogError(f"{self.image_dir}: input folder not found")
        try:
            self.load()
        except FileLoaderError:
            self._cases["input_image"] = []
        if len(self._cases["input_image"]) == 0:
            raise MidogError(f"no image files under {self.image_dir}")
        self.validate()
        with output_lock(self.output_dir):  # two runs on one /output would interleave their results
            remove_stale_temp([self.output_dir / CASES_FILE, self.output_dir / RESULT_FILE])  # a killed run's
            self.detector = self.run.detector()
            log.info(f"weights {self.run.weights} ({self.weights_source}), threshold {self.run.threshold:g}, device {self.detector.device}; threshold from {self.run.threshold_from}")
            self.process_cases()
            self.save()
        return sum(1 for case in self._case_results if case["error"] is not None)

    def process_cases(self, file_loader_key: str | None = None) -> None:
        """evalutils' loop, saving after every image: when the platform kills the container
        at its time limit (or a signal stops it), results.json holds every image finished
        so far and mitotic-figures.json the first result, both complete JSON."""
        self._case_results = []
        self.write_results()  # from the start, /output holds this run's results, not an earlier run's
        for idx, case in self._cases[file_loader_key or self._index_key].iterrows():
            self._case_results.append(self.process_case(idx=idx, case=case))
            self.write_results()

    def predict(self, *, input_image: Path) -> Outcome:  # type: ignore[override]
        # Takes the file, not a loaded image: the pipeline reads it (regions of whole slides),
        # and any failure comes back as the image's one-line error.
        return detect_or_error(self.detector, input_image, None, self.run, debug=bool(os.environ.get("MIDOG_DEBUG")))

    def process_case(self, *, idx: int, case: Any) -> dict[str, Any]:
        path, name = Path(case["path"]), case["filename"]
        refused = case.get("refused")
        if isinstance(refused, str):  # pandas may hold a missing value as NaN, not None
            log.error(f"error: {refused}")
            return {"filename": name, "mitotic-figures": None, "error": refused}
        summary, error, _, answer = self.predict(input_image=path)
        if error is not None:
            log.error(f"error: {error}")
            return {"filename": name, "mitotic-figures": None, "error": error}
        log.info(summary)
        return {"filename": name, "mitotic-figures": {"name": POINTS_NAME, **answer} if self.style == "2025" else answer, "error": None}

    def write_results(self) -> list[dict[str, Any]]:  # after every image (process_cases)
        return write_cases(self.output_dir, self._case_results)

    def save(self) -> None:
        report_cases(self.output_dir, self.write_results(), len(self._case_results), log)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="process", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", type=Path, default=DEFAULT_INPUT, help=f"input folder (default {DEFAULT_INPUT})")
    p.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help=f"output folder (default {DEFAULT_OUTPUT})")
    p.add_argument("--weights", type=Path, default=None,
                   help=f"weights file (default: the checkpoint in --model-dir, else the one in {BAKED_MODEL_DIR}, else the published weights of `midog fetch`)")
    p.add_argument("--model-dir", type=Path, default=Path(os.environ.get("MIDOG_MODEL_DIR") or DEFAULT_MODEL_DIR),
                   help=f"the platform's model folder (env MIDOG_MODEL_DIR, default {DEFAULT_MODEL_DIR})")
    p.add_argument("--threshold", type=probability_arg, default=None,
                   help="operating point (env MIDOG_THRESHOLD; default: the model manifest's beside the weights, else the checkpoint's, else 0.64)")
    p.add_argument("--style", choices=("auto", *STYLES), default=os.environ.get("MIDOG_OUTPUT_STYLE") or "auto",
                   help="output style (env MIDOG_OUTPUT_STYLE): auto = the input layout's (2021, 2022, or 2025 for an inputs.json socket)")
    p.add_argument("--device", default=None, help="auto (CUDA when PyTorch can use it, else the CPU, loudly when a GPU is present but unusable), "
                   "cpu, or cuda[:N], which exits 2 rather than fall back (env MIDOG_DEVICE)")
    p.add_argument("--time-budget", type=positive_arg, default=None, metavar="SECONDS",
                   help="stop an image after this long, as that image's error, and go on (env MIDOG_TIME_BUDGET; default: none)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(verbose=bool(os.environ.get("MIDOG_VERBOSE")), debug=bool(os.environ.get("MIDOG_DEBUG")))
    if args.style not in ("auto", *STYLES):
        log.error(f"error: MIDOG_OUTPUT_STYLE must be one of auto, {', '.join(STYLES)}, not {args.style!r}")
        return 2
    try:
        device = pick_device(run_device(args.device))  # first, so that the log says where it runs whatever happens next
        log.info(describe_runtime(device))
        weights, source = find_weights(args.weights, args.model_dir, BAKED_MODEL_DIR)
        # process.py has no spacing option; its refusals name its own environment variables.
        run = settle_run(weights, threshold=args.threshold, device=str(device), time_budget=args.time_budget,
                         option_names={"mpp": None, **LIMIT_VARIABLES})
        algorithm = MitoticFigureDetection(args.input, args.output, run, args.style, weights_source=source)
        with signals_interrupt():
            failed = algorithm.process()
    except MidogError as exc:
        log.error(f"error: {exc}")
        return 2
    except KeyboardInterrupt as exc:  # SIGTERM at the platform's time limit, or Ctrl-C
        log.error(f"error: {describe(exc)}; {args.output / CASES_FILE} holds every image finished before")
        return exit_status(exc)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
