"""Reading a "Multiple points" result file back, for the commands that start from one
(`midog export`, `midog count`, `midog evaluate`): the one reader of every shape the
detector and the challenge containers write. 2021 lists points only, all of them mitotic
figures; 2022 every candidate with "name" and "probability"; 2025 the same plus a
top-level "name" (e.g. "Points of interest").
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import MidogError
from ..detector.detections import MITOTIC, Detections, Thumbnail

__all__ = ["at_threshold", "load_json", "parse_points", "point_xyz", "read_result", "read_result_on", "result_from_json"]


def load_json(path: Path, what: str = "file") -> Any:
    """A JSON file's content, or a MidogError naming the file and what is wrong."""
    if not path.is_file():
        raise MidogError(f"{path}: {what} not found")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise MidogError(f"{path}: not valid JSON ({exc})") from None


def _is_number(value: Any) -> bool:
    # bool is an int in Python, but true/false in a coordinate is a broken file.
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def point_xyz(value: Any, path: Path, where: str) -> list[float]:
    if not isinstance(value, (list, tuple)) or len(value) not in (2, 3) or not all(_is_number(v) for v in value):
        raise MidogError(f"{path}: {where} is not a point [x_mm, y_mm, z]: {value!r}")
    return [float(v) for v in value] + [0.0] * (3 - len(value))


def parse_points(data: Any, path: str | Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """A "Multiple points" file's content, in any of the shapes the containers write (2021:
    points only, all mitotic figures; 2022 and 2025: every candidate named and scored) ->
    (points (n, 3) mm, probabilities (NaN where none is given), names ("mitotic figure"
    where none is given)). Evaluation, exports and counts all read results through this."""
    if not isinstance(data, dict) or not isinstance(data.get("points"), list):
        raise MidogError(f'{path}: not a "Multiple points" answer (needs a "points" list)')
    if data.get("type", "Multiple points") != "Multiple points":
        raise MidogError(f'{path}: type is {data["type"]!r}, expected "Multiple points"')
    xyz, prob, names = [], [], []
    for i, entry in enumerate(data["points"]):
        where = f"points[{i}]"
        if not isinstance(entry, dict) or "point" not in entry:
            raise MidogError(f'{path}: {where} has no "point"')
        xyz.append(point_xyz(entry["point"], path, f"{where}.point"))
        if "probability" in entry and not _is_number(entry["probability"]):
            raise MidogError(f"{path}: {where}.probability is not a number: {entry['probability']!r}")
        prob.append(float(entry.get("probability", math.nan)))
        name = entry.get("name", MITOTIC)
        if not isinstance(name, str):
            raise MidogError(f"{path}: {where}.name is not a string: {name!r}")
        names.append(name)
    return np.asarray(xyz, float).reshape(-1, 3), np.asarray(prob, float), names


def read_result(path: str | Path, spacing_mm: tuple[float, float]) -> Detections:
    """A result file as `Detections` on an image of `spacing_mm` (which turns its millimetres
    into pixels); a `MidogError` naming the file and the entry when malformed."""
    return result_from_json(load_json(Path(path), "result file"), path, spacing_mm)


def result_from_json(data: object, path: str | Path, spacing_mm: tuple[float, float]) -> Detections:
    """`read_result` for content already loaded; `path` names it in errors."""
    xyz, probability, names = parse_points(data, path)
    xy_mm = xyz[:, :2]
    centres = xy_mm / np.asarray(spacing_mm, float)
    n = len(names)
    return Detections(
        boxes=np.concatenate([centres, centres], 1), scores=probability, classes=np.zeros(n, np.int64),
        spacing_mm=tuple(spacing_mm), names=names, xy_mm=xy_mm, mitotic=np.array([name == MITOTIC for name in names], bool),
        info={"source": str(path)},
    )


def read_result_on(path: str | Path, image: Path | None = None, mpp: float | None = None, thumbnail_side: int | None = None) -> Detections:
    """A result file on the image it was made from: the spacing is the image's own (or
    `mpp`, which overrides it, or stands in for it without an image); the image is opened
    once, for its spacing, its size and, with `thumbnail_side`, its thumbnail."""
    from ..slides.readers import open_slide
    from ..slides.spacing import mpp_spacing

    if image is None:
        if mpp is None:
            raise MidogError("pass --image (its spacing converts mm to pixels) or --mpp")
        return read_result(path, mpp_spacing(Path("--mpp"), mpp, "--mpp"))
    with open_slide(image, mpp) as slide:
        thumbnail = Thumbnail(*slide.thumbnail(thumbnail_side)) if thumbnail_side else None
        spacing, size, offset = slide.spacing_mm, (slide.width, slide.height), slide.offset_px
    found = read_result(path, spacing)
    return replace(found, image=Path(image), image_size=size, offset_px=offset, thumbnail=thumbnail)


def at_threshold(found: Detections, threshold: float, source: str | Path) -> Detections:
    """The detections renamed at `threshold`: those with a probability above it are mitotic
    figures, the others not, as the detector names them. A result without probabilities
    (2021 style) cannot be re-thresholded: `MidogError` naming `source`."""
    if not 0 <= threshold <= 1:
        raise MidogError(f"threshold must lie in [0, 1], not {threshold:g}")
    if len(found) and np.isnan(found.scores.astype(np.float64)).any():
        raise MidogError(f"{source}: some points have no probability (2021 style), so no threshold can be applied")
    return found.at_threshold(threshold)
