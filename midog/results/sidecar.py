"""What a result file cannot hold, kept beside it: <stem>.midog.json.

A "Multiple points" JSON is in millimetres; turning it back into pixels needs the spacing the
detector used, which is not always the image's own (`midog detect --mpp 0.5`). The platform's
schema allows no extra field at any level of that JSON (additionalProperties is false for the
file, its points and its version), so the spacing goes in this small sidecar, with the image's
size, its level-0 offset (OpenSlide's bounds), the weights' SHA-256 and the threshold.

`read_recorded` is how `midog export` and `midog count` use it: the recorded spacing wins,
an --mpp that disagrees with it is refused, an image of another size is refused, and an image
whose own spacing differs is noted (the caller warns): points are never rescaled silently.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import MidogError, UsageError

if TYPE_CHECKING:
    from ..detector.detections import Detections

SUFFIX = ".midog.json"
FORMAT = "midog result info"
VERSION = 1
SAME = 1e-6  # relative: spacings that agree to this are the same spacing


@dataclass(frozen=True)
class ResultInfo:
    spacing_mm: tuple[float, float]
    size_px: tuple[int, int] | None = None
    offset_px: tuple[int, int] | None = None  # level-0 (x, y) of the slide's non-empty region
    image: str | None = None  # the image's file name, for people reading the file
    weights_sha256: str | None = None
    threshold: float | None = None
    style: str | None = None


def sidecar_path(result: str | Path) -> Path:
    result = Path(result)
    return result.with_name(result.stem + SUFFIX)


def is_sidecar(path: str | Path) -> bool:
    return Path(path).name.endswith(SUFFIX)


def write_info(result: str | Path, info: ResultInfo) -> Path:
    from ..atomic import write_json_atomic

    body = {"format": FORMAT, "version": VERSION, **asdict(info)}
    return write_json_atomic(sidecar_path(result), body, indent=1)


def read_info(result: str | Path) -> ResultInfo | None:
    """The sidecar of `result`, None when there is none; `MidogError` naming it when broken."""
    path = sidecar_path(result)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MidogError(f"{path}: unreadable result info ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise MidogError(f'{path}: not a result info file (no "format": "{FORMAT}")')
    try:
        return _parse(data)
    except (KeyError, TypeError, ValueError, OverflowError) as exc:  # OverflowError: int(Infinity), found by fuzzing
        raise MidogError(f"{path}: malformed result info ({type(exc).__name__}: {exc})") from None


def _pair(value: Any, kind: type) -> tuple | None:
    if value is None:
        return None
    a, b = value
    return kind(a), kind(b)


def _parse(data: dict[str, Any]) -> ResultInfo:
    spacing = _pair(data["spacing_mm"], float)
    if spacing is None or not all(math.isfinite(s) and s > 0 for s in spacing):
        raise ValueError(f"spacing_mm {data['spacing_mm']!r} is not two positive numbers")
    return ResultInfo(
        spacing, _pair(data.get("size_px"), int), _pair(data.get("offset_px"), int), data.get("image"),
        data.get("weights_sha256"), None if data.get("threshold") is None else float(data["threshold"]), data.get("style"),
    )


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@lru_cache(maxsize=8)
def _sha256(path: str, size: int, mtime_ns: int) -> str:  # size and mtime: a changed file is hashed again
    return file_sha256(path)


def weights_sha256(source: str | Path | None) -> str | None:
    """SHA-256 of a weights file (cached: a batch hashes its weights once); None for a model in memory."""
    if source is None or not os.path.isfile(source):
        return None
    stat = os.stat(source)
    return _sha256(str(source), stat.st_size, stat.st_mtime_ns)


def _same(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return all(abs(x - y) <= SAME * max(abs(x), abs(y)) for x, y in zip(a, b))


def _um(spacing: tuple[float, float]) -> str:
    x, y = (s * 1000 for s in spacing)
    return f"{x:.6g} µm/px" if math.isclose(x, y, rel_tol=SAME) else f"{x:.6g} x {y:.6g} µm/px"


def read_recorded(result: str | Path, image: Path | None = None, mpp: float | None = None,
                  thumbnail_side: int | None = None) -> tuple["Detections", list[str]]:
    """A result file as `Detections` at the spacing it was made at (its sidecar's, checked
    against --mpp and the image), with the image's size, offset and, with `thumbnail_side`,
    its thumbnail; and the warnings for the caller to show. Without a sidecar (results of
    other programs), as `reader.read_result_on`: the image's own spacing or --mpp."""
    from dataclasses import replace

    from ..detector.detections import Thumbnail
    from ..errors import ImageError
    from ..slides.readers import open_slide
    from .reader import read_result, read_result_on

    info = read_info(result)
    if info is None:
        return read_result_on(result, image, mpp, thumbnail_side), []
    recorded = info.spacing_mm
    where = sidecar_path(result)
    if mpp is not None and not _same(recorded, (mpp / 1000, mpp / 1000)):
        raise UsageError(
            f"{result}: the points were made at {_um(recorded)} ({where}); --mpp {mpp:g} would rescale them. "
            "Leave --mpp out to use the recorded spacing"
        )
    found = read_result(result, recorded)
    found = replace(found, image_size=info.size_px, offset_px=info.offset_px or (0, 0))
    if info.threshold is not None:
        found = replace(found, threshold=info.threshold)
    notes: list[str] = []
    if image is not None:
        # Opened once, with its own spacing to compare; an image without spacing of its own
        # (or a refused one) opens at the recorded spacing instead.
        try:
            slide = open_slide(image)
            own = slide.spacing_mm
        except ImageError:
            slide, own = open_slide(image, recorded[0] * 1000), None
        with slide:
            size, offset = (slide.width, slide.height), slide.offset_px
            thumbnail = Thumbnail(*slide.thumbnail(thumbnail_side)) if thumbnail_side else None
        if info.size_px is not None and tuple(info.size_px) != size:
            raise UsageError(f"{result}: made on an image of {info.size_px[0]} x {info.size_px[1]} px ({where}), but {image} has {size[0]} x {size[1]} px")
        if own is not None and not _same(own, recorded):
            notes.append(f"{image} says {_um(own)}, but the result was made at {_um(recorded)} ({where}); using {_um(recorded)}")
        found = replace(found, image=Path(image), image_size=size, offset_px=offset, thumbnail=thumbnail)
    return found, notes
