"""Grand Challenge entry point: `python -m process` (the container) or
`python process.py --input DIR --output DIR [--weights FILE] [--model-dir DIR] [--threshold T]` (local use).

An evalutils `DetectionAlgorithm` around the detection core (`midog.pipeline.image.Detector`); it
finds the images, calls the core on each and writes the results. It never re-implements
the detection. See container/README.md for the interfaces, options and output files.

Exit status: 0 when every image gave a result, 1 when any image failed (the others still
have theirs), 2 when nothing could run (no images, no weights, bad options).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from evalutils import DetectionAlgorithm
from evalutils.exceptions import FileLoaderError
from evalutils.io import FileLoader

from midog.atomic import output_lock, remove_stale_temp, write_json_atomic
from midog.pipeline.image import Detector
from midog.detector.detections import MITOTIC
from midog.detector.device import describe_runtime, pick_device
from midog.errors import MidogError, describe, exit_status, image_error_line, is_out_of_memory, shown, signals_interrupt
from midog.detector.weights import git_blob_sha1, published_weights
from midog.config.checks import check_positive, check_probability, checked
from midog.commands.args import positive as positive_arg
from midog.commands.args import probability as probability_arg
from midog.detector.detections import STYLES as CORE_STYLES
from midog.slides.readers import DEFAULT_LIMITS, OPENSLIDE_SUFFIXES, Limits

DEFAULT_INPUT = Path("/input")
DEFAULT_OUTPUT = Path("/output")
# Grand Challenge extracts an algorithm's uploaded model tarball here; it beats the baked-in weights.
DEFAULT_MODEL_DIR = Path("/opt/ml/model")
# The project's model/ folder (the content of that tarball), beside this file: in the image
# /opt/app/model/, baked in so that an image uploaded without a model tarball still works.
BAKED_MODEL_DIR = Path(__file__).resolve().parent / "model"
MODEL_MANIFEST = "manifest.json"  # beside the checkpoint: its operating point and blob hash
PUBLISHED_NAME = "RetinaNetDA.pth"
# The interface "Histopathology Region of Interest Cropout" (2022 and 2025) puts its image here;
# in 2025 /input/inputs.json names it as the socket with this slug.
ROI_FOLDER = Path("images/histopathology-roi-cropout")
ROI_SLUG = "histopathology-region-of-interest-cropout"
# Output styles: the core's 2021 and 2022 ones, and 2025 = 2022 plus the top-level name that
# the MIDOG 2025 template writes.
STYLES = (*CORE_STYLES, "2025")
POINTS_NAME = "Points of interest"
RESULT_FILE = "mitotic-figures.json"  # what the platform reads: one "Multiple points" dict
CASES_FILE = "results.json"  # every image's result or error, so none is lost with several images
IMAGE_SUFFIXES = {".tif", ".tiff", ".mha", ".mhd", ".png", ".jpg", ".jpeg", ".bmp"} | OPENSLIDE_SUFFIXES
CHECKPOINT_SUFFIXES = {".pth", ".pt", ".ckpt"}


class _Prefixed(logging.LoggerAdapter):
    """The container's lines start with "process:", so the platform's log reads like midog's."""

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        return f"process: {msg}", kwargs


# Under midog's logger: shown by default, as the platform shows the container's stderr.
log = _Prefixed(logging.getLogger("midog.process"), {})


class ImageFileLoader(FileLoader):
    """Accepts image files by name only; the detection core reads them later.

    evalutils' SimpleITKLoader would read every image whole just to hash it, and it drops
    unreadable files with a log line: a damaged image must instead reach `process_case`,
    which reports it as that image's error.
    """

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
        if fname.is_dir():
            return []
        if fname.suffix.lower() not in IMAGE_SUFFIXES:
            log.info(f"skipping {shown(name)}: not an image file")
            return []
        return [{"path": fname, "filename": name, "refused": None}]


def inside(path: Path, root: Path) -> bool:
    """`path`, with every symbolic link followed, lies in `root` (also followed)."""
    return path.resolve().is_relative_to(root.resolve())


def find_layout(input_dir: Path) -> tuple[str, Path]:
    """The input layout and its image folder:

    - ("2025", socket folder) when `inputs.json` lists an image socket (the platform's
      current sockets file): the first existing `relative_path` folder, the ROI socket's
      (slug histopathology-region-of-interest-cropout) tried first;
    - ("2022", `images/histopathology-roi-cropout/`) when only that folder exists, or when
      `inputs.json` cannot be read (with a warning);
    - ("2021", the input folder) otherwise: every image under it.
    """
    inputs_json = input_dir / "inputs.json"
    roi = input_dir / ROI_FOLDER
    if not inputs_json.is_file():
        return ("2022", roi) if roi.is_dir() else ("2021", input_dir)
    try:
        entries = json.loads(inputs_json.read_text())
        sockets = [
            e["interface"]
            for e in entries
            if e.get("interface", {}).get("kind") == "Image" and e["interface"].get("relative_path")
        ]
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        log.warning(f"warning: cannot read {inputs_json} ({type(exc).__name__}: {exc}); looking in {ROI_FOLDER}/")
        return "2022", roi
    if not sockets:
        log.warning(f"warning: {inputs_json} lists no image socket; looking in {ROI_FOLDER}/")
        return "2022", roi
    # A relative_path that is absolute, climbs with "..", or passes a symbolic link out of
    # the input folder would read images from elsewhere on the machine: refused.
    kept = [s for s in sockets if isinstance(s["relative_path"], str) and inside(input_dir / s["relative_path"], input_dir)]
    for socket in sockets:
        if socket not in kept:
            log.warning(f"warning: {inputs_json}: ignoring relative_path {shown(repr(socket['relative_path']))}: it leads outside {input_dir}")
    if not kept:
        log.warning(f"warning: {inputs_json} lists no image socket inside {input_dir}; looking in {ROI_FOLDER}/")
        return "2022", roi
    sockets = kept
    # The ROI socket first; then any image socket whose folder is there.
    sockets.sort(key=lambda socket: socket.get("slug") != ROI_SLUG)
    folders = [input_dir / socket["relative_path"] for socket in sockets]
    return "2025", next((f for f in folders if f.is_dir()), folders[0])


def checkpoint_in(folder: Path) -> Path | None:
    """The checkpoint (*.pth, *.pt, *.ckpt, searched recursively) in a model folder: the only
    one, or the one named RetinaNetDA.pth among several; None when there is none."""
    if not folder.is_dir():
        return None
    found = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in CHECKPOINT_SUFFIXES)
    named = [p for p in found if p.name == PUBLISHED_NAME]
    if len(found) == 1 or len(named) == 1:
        return (named or found)[0]
    if found:
        listed = ", ".join(str(p) for p in found)
        raise MidogError(f"{folder} holds several checkpoints ({listed}); keep one, or name it {PUBLISHED_NAME}")
    return None


def find_weights(explicit: Path | None, model_dir: Path, baked_dir: Path | None = None) -> tuple[Path, str]:
    """(weights, where they come from): --weights, else the checkpoint in the platform's model
    folder, else the one baked into the image (model/ beside this file), else the published
    weights where `midog fetch` puts them."""
    if explicit is not None:
        if not explicit.is_file():
            raise MidogError(f"{explicit}: weights file not found")
        return explicit, "--weights"
    found = checkpoint_in(model_dir)
    if found is not None:
        return found, f"the platform's model folder {model_dir}"
    baked_dir = BAKED_MODEL_DIR if baked_dir is None else baked_dir
    found = checkpoint_in(baked_dir)
    if found is not None:
        return found, f"baked in ({baked_dir}); {model_dir} has no checkpoint"
    published = published_weights()
    if published.is_file():
        return published, f"the published weights fetched by `midog fetch`; {model_dir} and {baked_dir} have no checkpoint"
    raise MidogError(f"no weights: neither {model_dir} nor {baked_dir} has a checkpoint and {published} is missing (run ./build.sh or `midog fetch`)")


def manifest_threshold(weights: Path) -> float | None:
    """The operating point from the model manifest beside the weights (model/manifest.json,
    which travels in the model tarball), when it lists these weights by name with their git
    blob hash. A manifest whose hash does not match the file is ignored with a warning."""
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
    if point is None:
        return None
    if not isinstance(point, (int, float)) or not 0 <= point <= 1:
        log.warning(f"warning: ignoring {manifest}: operating_point {point!r} is not a number in [0, 1]")
        return None
    return float(point)


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
        weights_source: str = "",
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
        self.weights_source = weights_source
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
            self.detector = Detector(self.weights, self.device, self.threshold)
            self.detector.limits = self.limits
            source = f" ({self.weights_source})" if self.weights_source else ""
            log.info(f"weights {self.weights}{source}, threshold {self.detector.threshold:g}, device {self.detector.device}")
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

    def predict(self, *, input_image: Path) -> dict[str, Any]:  # type: ignore[override]
        # Takes the file, not a loaded image: the core reads it (regions of whole slides).
        # Returns the "Multiple points" dict rather than a DataFrame, since save() writes it.
        assert self.detector is not None
        deadline = time.monotonic() + self.time_budget if self.time_budget else None
        if self.style == "2025":
            return {"name": POINTS_NAME, **self.detector.points_json(input_image, style="2022", deadline=deadline)}
        return self.detector.points_json(input_image, style=self.style, deadline=deadline)

    def process_case(self, *, idx: int, case: Any) -> dict[str, Any]:
        path, name = Path(case["path"]), case["filename"]
        refused = case.get("refused")
        if isinstance(refused, str):  # pandas may hold a missing value as NaN, not None
            log.error(f"error: {refused}")
            return {"filename": name, "mitotic-figures": None, "error": refused}
        start = time.monotonic()
        try:
            result = self.predict(input_image=path)
        except MidogError as exc:
            log.error(f"error: {exc}")
            return {"filename": name, "mitotic-figures": None, "error": str(exc)}
        except Exception as exc:  # one image's failure must not cost the others their results
            if os.environ.get("MIDOG_DEBUG"):
                traceback.print_exc()
            message = image_error_line(path, exc)
            log.error(f"error: {message}")
            return {"filename": name, "mitotic-figures": None, "error": message}
        n = sum(1 for p in result["points"] if p.get("name", MITOTIC) == MITOTIC)
        log.info(f"{shown(name)}: {n} mitotic figures, {len(result['points'])} points ({time.monotonic() - start:.1f} s)")
        return {"filename": name, "mitotic-figures": result, "error": None}

    def write_results(self) -> list[dict[str, Any]]:
        """results.json with every case so far, and mitotic-figures.json with the first
        result (or none: a stale file of an earlier run would look like a result)."""
        cases = self._case_results
        write_json_atomic(self.output_dir / CASES_FILE, cases)
        target = self.output_dir / RESULT_FILE
        done = [case for case in cases if case["error"] is None]
        if not done:
            target.unlink(missing_ok=True)
        elif done[0] is cases[-1]:  # the first result appeared with this case; later ones do not change it
            write_json_atomic(target, done[0]["mitotic-figures"])
        return done

    def save(self) -> None:
        cases = self._case_results
        target = self.output_dir / RESULT_FILE
        done = self.write_results()
        if not done:
            log.error(f"no image succeeded: {target} not written; errors are in {self.output_dir / CASES_FILE}")
            return
        if len(cases) > 1:
            log.info(f"{target} holds {shown(done[0]['filename'])}; every image's result is in {self.output_dir / CASES_FILE}")
        failed = len(cases) - len(done)
        if failed:
            log.warning(f"{failed} of {len(cases)} images failed")


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
    p.add_argument(
        "--weights",
        type=Path,
        default=None,
        help=f"weights file (default: the checkpoint in --model-dir, else the one in {BAKED_MODEL_DIR}, else the published weights of `midog fetch`)",
    )
    p.add_argument(
        "--model-dir",
        type=Path,
        default=Path(os.environ.get("MIDOG_MODEL_DIR") or DEFAULT_MODEL_DIR),
        help=f"the platform's model folder (env MIDOG_MODEL_DIR, default {DEFAULT_MODEL_DIR})",
    )
    p.add_argument(
        "--threshold",
        type=probability_arg,
        default=None,
        help="operating point (env MIDOG_THRESHOLD; default: the model manifest's beside the weights, else the checkpoint's, else 0.64)",
    )
    p.add_argument(
        "--style",
        choices=("auto", *STYLES),
        default=os.environ.get("MIDOG_OUTPUT_STYLE") or "auto",
        help="output style (env MIDOG_OUTPUT_STYLE): auto = the input layout's (2021, 2022, or 2025 for an inputs.json socket)",
    )
    p.add_argument(
        "--device",
        default=os.environ.get("MIDOG_DEVICE") or "auto",
        help="auto (CUDA when PyTorch can use it, else the CPU, loudly when a GPU is present but unusable), "
        "cpu, or cuda[:N], which exits 2 rather than fall back (env MIDOG_DEVICE)",
    )
    p.add_argument(
        "--time-budget", type=positive_arg, default=None, metavar="SECONDS",
        help="stop an image after this long, as that image's error, and go on (env MIDOG_TIME_BUDGET; default: none)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from midog.commands.cli import setup_logging

    setup_logging(verbose=bool(os.environ.get("MIDOG_VERBOSE")), debug=bool(os.environ.get("MIDOG_DEBUG")))
    if args.style not in ("auto", *STYLES):
        log.error(f"error: MIDOG_OUTPUT_STYLE must be one of auto, {', '.join(STYLES)}, not {args.style!r}")
        return 2
    try:
        # First, so that the log says where it runs whatever happens next.
        device = pick_device(args.device)
        log.info(describe_runtime(device))
        threshold = args.threshold if args.threshold is not None else env_threshold()
        budget = args.time_budget if args.time_budget is not None else env_number("MIDOG_TIME_BUDGET", None)
        limits = process_limits()
        weights, source = find_weights(args.weights, args.model_dir)
        if threshold is None:
            threshold = manifest_threshold(weights)
        algorithm = MitoticFigureDetection(
            args.input, args.output, weights, args.style, threshold, str(device), limits=limits, time_budget=budget, weights_source=source
        )
        with signals_interrupt():
            failed = algorithm.process()
    except MidogError as exc:
        log.error(f"error: {exc}")
        return 2
    except KeyboardInterrupt as exc:  # SIGTERM at the platform's time limit, or Ctrl-C
        log.error(f"error: {describe(exc)}; {args.output / CASES_FILE} holds every image finished before")
        return exit_status(exc)
    except (MemoryError, RuntimeError) as exc:
        if not is_out_of_memory(exc):
            raise
        # Before any image: PyTorch and the weights did not fit under the process's memory
        # limit (an address-space limit counts the ~3 GB PyTorch's CUDA build maps at import).
        log.error("error: out of memory while loading PyTorch and the weights, before any image; "
                  "the run needs more memory than its limit allows (docs/batch-failures.md, Memory ceilings)")
        return 2
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
