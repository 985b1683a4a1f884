"""Grand Challenge entry point: `python -m process` (the container) or
`python process.py --input DIR --output DIR [--weights FILE] [--threshold T]` (local use).

An evalutils `DetectionAlgorithm` around the detection core (`midog.detect.Detector`); it
finds the images, calls the core on each and writes the results. It never re-implements
the detection. See container/README.md for the interfaces, options and output files.

Exit status: 0 when every image gave a result, 1 when any image failed (the others still
have theirs), 2 when nothing could run (no images, no weights, bad options).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from evalutils import DetectionAlgorithm
from evalutils.exceptions import FileLoaderError
from evalutils.io import FileLoader

from midog.detect import PUBLISHED_WEIGHTS, Detector, remove_stale_temp
from midog.errors import MidogError, image_error_line
from midog.options import check_positive, check_probability, checked
from midog.options import positive as positive_arg
from midog.options import probability as probability_arg
from midog.output import STYLES, write_json_atomic
from midog.slide import DEFAULT_LIMITS, OPENSLIDE_SUFFIXES, Limits

DEFAULT_INPUT = Path("/input")
DEFAULT_OUTPUT = Path("/output")
# Grand Challenge extracts an algorithm's uploaded model tarball here; it beats the baked-in weights.
DEFAULT_MODEL_DIR = Path("/opt/ml/model")
# The 2022+ interface "Histopathology Region of Interest Cropout" puts its image here.
ROI_FOLDER = Path("images/histopathology-roi-cropout")
RESULT_FILE = "mitotic-figures.json"  # what the platform reads: one "Multiple points" dict
CASES_FILE = "results.json"  # every image's result or error, so none is lost with several images
IMAGE_SUFFIXES = {".tif", ".tiff", ".mha", ".mhd", ".png", ".jpg", ".jpeg", ".bmp"} | OPENSLIDE_SUFFIXES
CHECKPOINT_SUFFIXES = {".pth", ".pt", ".ckpt"}


def log(message: str) -> None:
    print(f"process: {message}", file=sys.stderr, flush=True)


class ImageFileLoader(FileLoader):
    """Accepts image files by name only; the detection core reads them later.

    evalutils' SimpleITKLoader would read every image whole just to hash it, and it drops
    unreadable files with a log line: a damaged image must instead reach `process_case`,
    which reports it as that image's error.
    """

    def __init__(self, root: Path) -> None:
        self.root = root

    def load(self, *, fname: Path) -> list[dict[str, Any]]:
        if fname.is_dir():
            return []
        if fname.suffix.lower() not in IMAGE_SUFFIXES:
            log(f"skipping {fname.relative_to(self.root)}: not an image file")
            return []
        return [{"path": fname, "filename": fname.relative_to(self.root).as_posix()}]


def find_layout(input_dir: Path) -> tuple[str, Path]:
    """("2021", input_dir) for the 2021 interface (every image under the input folder), or
    ("2022", image folder) for the 2022+ one: the folder that `inputs.json` names for its
    image interface, else `images/histopathology-roi-cropout/`."""
    inputs_json = input_dir / "inputs.json"
    roi = input_dir / ROI_FOLDER
    if not inputs_json.is_file():
        return ("2022", roi) if roi.is_dir() else ("2021", input_dir)
    try:
        entries = json.loads(inputs_json.read_text())
        folders = [
            input_dir / e["interface"]["relative_path"]
            for e in entries
            if e.get("interface", {}).get("kind") == "Image" and e["interface"].get("relative_path")
        ]
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        log(f"warning: cannot read {inputs_json} ({type(exc).__name__}: {exc}); looking in {ROI_FOLDER}/")
        return "2022", roi
    for folder in folders:
        if folder.is_dir():
            return "2022", folder
    return "2022", roi


def find_weights(explicit: Path | None, model_dir: Path) -> Path:
    """--weights, else the one checkpoint in the platform's model folder, else the baked-in weights."""
    if explicit is not None:
        if not explicit.is_file():
            raise MidogError(f"{explicit}: weights file not found")
        return explicit
    if model_dir.is_dir():
        found = sorted(p for p in model_dir.rglob("*") if p.is_file() and p.suffix.lower() in CHECKPOINT_SUFFIXES)
        named = [p for p in found if p.name == PUBLISHED_WEIGHTS.name]
        if len(found) == 1 or len(named) == 1:
            return (named or found)[0]
        if found:
            listed = ", ".join(str(p) for p in found)
            raise MidogError(f"{model_dir} holds several checkpoints ({listed}); keep one, or name it {PUBLISHED_WEIGHTS.name}")
    if not PUBLISHED_WEIGHTS.is_file():
        raise MidogError(f"no weights: {model_dir} has no checkpoint and {PUBLISHED_WEIGHTS} is missing (run `midog fetch`)")
    return PUBLISHED_WEIGHTS


class MitoticFigureDetection(DetectionAlgorithm):
    def __init__(
        self,
        input_dir: Path,
        output_dir: Path,
        weights: Path,
        style: str = "auto",
        threshold: float | None = None,
        device: str = "auto",
        limits: Limits | None = None,
        time_budget: float | None = None,
    ) -> None:
        # process.py has no spacing option; its refusals name its own environment variables.
        self.limits = limits or process_limits()
        self.time_budget = time_budget
        layout, image_dir = find_layout(input_dir)
        self.input_dir = input_dir
        self.output_dir = output_dir
        self.image_dir = image_dir
        self.style = layout if style == "auto" else style
        self.weights = weights
        self.threshold = threshold
        self.device = device
        self.detector: Detector | None = None
        super().__init__(
            file_loaders={"input_image": ImageFileLoader(input_dir)},
            # No UniqueImagesValidator: two identical images are two cases that each get
            # their result; rejecting the whole run for it would lose results.
            validators={},
            input_path=image_dir,
            output_path=output_dir,
            output_file=output_dir / CASES_FILE,
        )
        log(f"{layout} interface: images under {image_dir}; output style {self.style}")

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
        remove_stale_temp([self.output_dir / CASES_FILE, self.output_dir / RESULT_FILE])  # a killed run's
        self.detector = Detector(self.weights, self.device, self.threshold)
        self.detector.limits = self.limits
        log(f"weights {self.weights}, threshold {self.detector.threshold:g}, device {self.detector.device}")
        self.process_cases()
        self.save()
        return sum(1 for case in self._case_results if case["error"] is not None)

    def predict(self, *, input_image: Path) -> dict[str, Any]:  # type: ignore[override]
        # Takes the file, not a loaded image: the core reads it (regions of whole slides).
        # Returns the "Multiple points" dict rather than a DataFrame, since save() writes it.
        assert self.detector is not None
        deadline = time.monotonic() + self.time_budget if self.time_budget else None
        return self.detector.points_json(input_image, style=self.style, deadline=deadline)

    def process_case(self, *, idx: int, case: Any) -> dict[str, Any]:
        path, name = Path(case["path"]), case["filename"]
        start = time.monotonic()
        try:
            result = self.predict(input_image=path)
        except MidogError as exc:
            log(f"error: {exc}")
            return {"filename": name, "mitotic-figures": None, "error": str(exc)}
        except Exception as exc:  # one image's failure must not cost the others their results
            if os.environ.get("MIDOG_DEBUG"):
                traceback.print_exc()
            message = image_error_line(path, exc)
            log(f"error: {message}")
            return {"filename": name, "mitotic-figures": None, "error": message}
        n = sum(1 for p in result["points"] if p.get("name", "mitotic figure") == "mitotic figure")
        log(f"{name}: {n} mitotic figures, {len(result['points'])} points ({time.monotonic() - start:.1f} s)")
        return {"filename": name, "mitotic-figures": result, "error": None}

    def save(self) -> None:
        cases = self._case_results
        write_json_atomic(self.output_dir / CASES_FILE, cases)
        target = self.output_dir / RESULT_FILE
        done = [case for case in cases if case["error"] is None]
        if not done:
            target.unlink(missing_ok=True)  # a stale file from an earlier run would look like a result
            log(f"no image succeeded: {target} not written; errors are in {self.output_dir / CASES_FILE}")
            return
        write_json_atomic(target, done[0]["mitotic-figures"])
        if len(cases) > 1:
            log(f"{target} holds {done[0]['filename']}; every image's result is in {self.output_dir / CASES_FILE}")
        failed = len(cases) - len(done)
        if failed:
            log(f"{failed} of {len(cases)} images failed")


def env_threshold() -> float | None:
    raw = os.environ.get("MIDOG_THRESHOLD")
    if not raw:
        return None
    return checked(check_probability, raw, f"MIDOG_THRESHOLD={raw!r}")


def env_number(name: str, default: float | None) -> float | None:
    raw = os.environ.get(name)
    return checked(check_positive, raw, f"{name}={raw!r}") if raw else default


def process_limits() -> Limits:
    """slide.Limits from MIDOG_MAX_MEGAPIXELS, MIDOG_MAX_CHUNK_MB, MIDOG_MAX_MEMORY_MB."""
    L = DEFAULT_LIMITS
    return Limits(
        max_megapixels=env_number("MIDOG_MAX_MEGAPIXELS", L.max_megapixels),  # type: ignore[arg-type]
        max_chunk_mb=env_number("MIDOG_MAX_CHUNK_MB", L.max_chunk_mb),  # type: ignore[arg-type]
        max_memory_mb=env_number("MIDOG_MAX_MEMORY_MB", L.max_memory_mb),  # type: ignore[arg-type]
        mpp_option=None,
        megapixels_option="MIDOG_MAX_MEGAPIXELS",
        chunk_option="MIDOG_MAX_CHUNK_MB",
        memory_option="MIDOG_MAX_MEMORY_MB",
    )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="process", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", type=Path, default=DEFAULT_INPUT, help=f"input folder (default {DEFAULT_INPUT})")
    p.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help=f"output folder (default {DEFAULT_OUTPUT})")
    p.add_argument("--weights", type=Path, default=None, help=f"weights file (default: the checkpoint in --model-dir, else {PUBLISHED_WEIGHTS})")
    p.add_argument(
        "--model-dir",
        type=Path,
        default=Path(os.environ.get("MIDOG_MODEL_DIR") or DEFAULT_MODEL_DIR),
        help=f"the platform's model folder (env MIDOG_MODEL_DIR, default {DEFAULT_MODEL_DIR})",
    )
    p.add_argument("--threshold", type=probability_arg, default=None, help="operating point (env MIDOG_THRESHOLD; default: the checkpoint's, else 0.64)")
    p.add_argument(
        "--style",
        choices=("auto", *STYLES),
        default=os.environ.get("MIDOG_OUTPUT_STYLE") or "auto",
        help="output style (env MIDOG_OUTPUT_STYLE): auto = 2021 for the 2021 layout, 2022 for the 2022+ layout",
    )
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu or cuda[:N]")
    p.add_argument(
        "--time-budget", type=positive_arg, default=None, metavar="SECONDS",
        help="stop an image after this long, as that image's error, and go on (env MIDOG_TIME_BUDGET; default: none)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from midog.cli import setup_logging

    setup_logging(verbose=bool(os.environ.get("MIDOG_VERBOSE")), debug=bool(os.environ.get("MIDOG_DEBUG")))
    if args.style not in ("auto", *STYLES):
        print(f"process: error: MIDOG_OUTPUT_STYLE must be auto, 2021 or 2022, not {args.style!r}", file=sys.stderr)
        return 2
    try:
        threshold = args.threshold if args.threshold is not None else env_threshold()
        budget = args.time_budget if args.time_budget is not None else env_number("MIDOG_TIME_BUDGET", None)
        limits = process_limits()
        weights = find_weights(args.weights, args.model_dir)
        algorithm = MitoticFigureDetection(args.input, args.output, weights, args.style, threshold, args.device, limits, budget)
        failed = algorithm.process()
    except MidogError as exc:
        print(f"process: error: {exc}", file=sys.stderr)
        return 2
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
