"""The Grand Challenge container's side of a run: where the platform puts the images
(`find_layout`: the 2021, 2022 and 2025 interfaces), which checkpoint to use
(`find_weights`: --weights, the platform's model folder, the one baked into the image,
the published weights) and the files it reads back (`write_cases`: results.json with every
image's result or error, mitotic-figures.json with the first). process.py, the container's
entry point, builds its run from them; container/README.md describes the interfaces."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from ..atomic import write_json_atomic
from ..detector.weights import published_weights
from ..errors import MidogError, shown
from ..slides.wsi import OPENSLIDE_SUFFIXES

__all__ = ["CASES_FILE", "IMAGE_SUFFIXES", "opens_a_slide", "RESULT_FILE", "report_cases", "write_cases", "CHECKPOINT_SUFFIXES", "PUBLISHED_NAME", "ROI_FOLDER", "ROI_SLUG", "checkpoint_in", "find_layout", "find_weights", "inside"]

log = logging.getLogger("midog.process")

PUBLISHED_NAME = "RetinaNetDA.pth"
CHECKPOINT_SUFFIXES = {".pth", ".pt", ".ckpt"}
# The interface "Histopathology Region of Interest Cropout" (2022 and 2025) puts its image here;
# in 2025 /input/inputs.json names it as the socket with this slug.
ROI_FOLDER = Path("images/histopathology-roi-cropout")
ROI_SLUG = "histopathology-region-of-interest-cropout"
RESULT_FILE = "mitotic-figures.json"  # what the platform reads: one "Multiple points" dict
CASES_FILE = "results.json"  # every image's result or error, so none is lost with several images
IMAGE_SUFFIXES = {".tif", ".tiff", ".mha", ".mhd", ".png", ".jpg", ".jpeg", ".bmp", ".dcm"} | OPENSLIDE_SUFFIXES  # what the loader takes


def inside(path: Path, root: Path) -> bool:
    """`path`, with every symbolic link followed, lies in `root` (also followed)."""
    return path.resolve().is_relative_to(root.resolve())


def opens_a_slide(path: Path) -> bool:
    """Whether an image file is a case of its own: every one is, except the files of a DICOM
    slide (a folder of .dcm files) after the first, which opens the whole series."""
    return path.suffix.lower() != ".dcm" or path == min(path.parent.glob("*.dcm"))


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
        log.warning(f"process: warning: cannot read {inputs_json} ({type(exc).__name__}: {exc}); looking in {ROI_FOLDER}/")
        return "2022", roi
    if not sockets:
        log.warning(f"process: warning: {inputs_json} lists no image socket; looking in {ROI_FOLDER}/")
        return "2022", roi
    # A relative_path that is absolute, climbs with "..", or passes a symbolic link out of
    # the input folder would read images from elsewhere on the machine: refused.
    kept = [s for s in sockets if isinstance(s["relative_path"], str) and inside(input_dir / s["relative_path"], input_dir)]
    for socket in sockets:
        if socket not in kept:
            log.warning(f"process: warning: {inputs_json}: ignoring relative_path {shown(repr(socket['relative_path']))}: it leads outside {input_dir}")
    if not kept:
        log.warning(f"process: warning: {inputs_json} lists no image socket inside {input_dir}; looking in {ROI_FOLDER}/")
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


def find_weights(explicit: Path | None, model_dir: Path, baked_dir: Path) -> tuple[Path, str]:
    """(weights, where they come from): --weights, else the checkpoint in the platform's model
    folder, else the one baked into the image (`baked_dir`: model/ beside process.py), else
    the published weights where `midog fetch` puts them."""
    if explicit is not None:
        if not explicit.is_file():
            raise MidogError(f"{explicit}: weights file not found")
        return explicit, "--weights"
    found = checkpoint_in(model_dir)
    if found is not None:
        return found, f"the platform's model folder {model_dir}"
    found = checkpoint_in(baked_dir)
    if found is not None:
        return found, f"baked in ({baked_dir}); {model_dir} has no checkpoint"
    published = published_weights()
    if published.is_file():
        return published, f"the published weights fetched by `midog fetch`; {model_dir} and {baked_dir} have no checkpoint"
    raise MidogError(f"no weights: neither {model_dir} nor {baked_dir} has a checkpoint and {published} is missing (run ./build.sh or `midog fetch`)")


def write_cases(output_dir: Path, cases: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """results.json with every case so far, and mitotic-figures.json with the first result
    (or none: a stale file of an earlier run would look like a result); the cases done.
    Written after every image, so a container killed at the platform's time limit leaves
    complete JSON with every image finished before."""
    write_json_atomic(output_dir / CASES_FILE, cases)
    target = output_dir / RESULT_FILE
    done = [case for case in cases if case["error"] is None]
    if not done:
        target.unlink(missing_ok=True)
    elif done[0] is cases[-1]:  # the first result appeared with this case; later ones do not change it
        write_json_atomic(target, done[0]["mitotic-figures"])
    return done


def report_cases(output_dir: Path, done: list[dict[str, Any]], total: int, log: Any = log) -> None:
    """The run's last lines: where the results are, and how many images failed."""
    target = output_dir / RESULT_FILE
    if not done:
        log.error(f"no image succeeded: {target} not written; errors are in {output_dir / CASES_FILE}")
        return
    if total > 1:
        log.info(f"{target} holds {shown(done[0]['filename'])}; every image's result is in {output_dir / CASES_FILE}")
    if total > len(done):
        log.warning(f"{total - len(done)} of {total} images failed")
