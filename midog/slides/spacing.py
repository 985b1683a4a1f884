"""Pixel spacing: where it is read from (TIFF resolution tags, a slide's MPP property, an
image header, a user's --mpp), the plausibility rules every spacing passes before it
reaches an output, and the one rule that decides an image's spacing (`decide_spacing`:
the override, else what the file says, else refuse), applied by `readers.open_slide`.
Readers only report what their file says (`FileSpacing`)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..config.checks import PLAUSIBLE_MPP
from ..errors import ImageError
from .limits import DEFAULT_LIMITS, Limits

# Scanners write x and y spacings that differ in the last digits; each axis then keeps its
# own. A larger difference is a broken header, not a pixel shape, and is refused.
SPACING_TOLERANCE = 0.02


def check_spacing(path: Path, spacing_mm: tuple[float, float], source: str, limits: Limits = DEFAULT_LIMITS) -> tuple[float, float]:
    """Both axes finite, positive and a microscope's; within `SPACING_TOLERANCE` of each
    other. Every spacing that reaches an output passes here."""
    hint = limits.mpp_hint("the real spacing")
    for axis, value in zip("xy", spacing_mm):
        if not math.isfinite(value) or value <= 0:
            what = "zero" if value == 0 else f"{value}"
            raise ImageError(path, f"{axis} pixel spacing {what} (from {source}) is not a spacing{hint}")
        mpp = value * 1000.0
        if not PLAUSIBLE_MPP[0] <= mpp <= PLAUSIBLE_MPP[1]:
            raise ImageError(path, f"{axis} spacing {mpp:g} um/px (from {source}) is not a microscope resolution{hint}")
    sx, sy = spacing_mm
    if max(sx, sy) / min(sx, sy) - 1 > SPACING_TOLERANCE:
        raise ImageError(
            path,
            f"x and y spacings {sx * 1000:g} and {sy * 1000:g} um/px (from {source}) are more than "
            f"{SPACING_TOLERANCE:.0%} apart: not square pixels{hint}",
        )
    return (float(sx), float(sy))


def mpp_spacing(path: Path, mpp: float, source: str, limits: Limits = DEFAULT_LIMITS) -> tuple[float, float]:
    return check_spacing(path, (mpp / 1000.0, mpp / 1000.0), source, limits)


# TIFF ResolutionUnit -> mm; 4 and 5 (mm, um) are tifffile's extensions, used by some tools.
RESOLUTION_UNITS_MM = {2: 25.4, 3: 10.0, 4: 1.0, 5: 0.001}


def _resolution_value(path: Path, name: str, value: Any) -> float:
    if isinstance(value, tuple) and len(value) == 2:
        num, den = value
        if den == 0:
            raise ImageError(path, f"{name} is {num}/0, a fraction with a zero denominator; the file's resolution is broken")
        value = num / den
    elif isinstance(value, tuple) and len(value) == 1:
        value = value[0]
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ImageError(path, f"{name} is {value!r}, not a number") from None
    if not math.isfinite(v):
        raise ImageError(path, f"{name} is {v}, not a finite number")
    if v <= 0:
        raise ImageError(path, f"{name} is {'zero' if v == 0 else v}: the file's resolution is broken")
    return v


def tiff_spacing_mm(path: Path) -> tuple[float, float] | None:
    """Spacing from a TIFF's XResolution/YResolution/ResolutionUnit, or None without them."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            return page_spacing_mm(tif.pages[0], path)
    except tifffile.TiffFileError:
        return None


def page_spacing_mm(page: Any, path: Path | None = None) -> tuple[float, float] | None:
    """Spacing (x, y) in mm from a tifffile page's resolution tags; None when the file has
    no absolute resolution (no tags, or unit NONE); `ImageError` when the tags are broken."""
    path = Path(path if path is not None else getattr(page.parent, "filename", "?"))
    tags = page.tags
    unit, xres, yres = tags.get("ResolutionUnit"), tags.get("XResolution"), tags.get("YResolution")
    if xres is None or unit is None:
        return None
    try:
        code = int(unit.value)
    except (TypeError, ValueError):
        code = -1
    if code == 1:
        return None
    unit_mm = RESOLUTION_UNITS_MM.get(code)
    if unit_mm is None:
        raise ImageError(path, f"unknown ResolutionUnit {unit.value!r} (TIFF knows 1 none, 2 inch, 3 centimetre)")
    xv = _resolution_value(path, "XResolution", xres.value)
    yv = _resolution_value(path, "YResolution", yres.value) if yres is not None else xv
    return (unit_mm / xv, unit_mm / yv)


def mpp_property_mm(path: Path, raw_x: Any, raw_y: Any | None) -> tuple[float, float]:
    """A slide's MPP properties (micrometres per pixel, text; y defaults to x) in mm per pixel."""
    def number(raw: Any) -> float:
        try:
            return float(raw)
        except (TypeError, ValueError):
            raise ImageError(path, f"the slide's MPP property {raw!r} is not a number") from None

    return number(raw_x) / 1000.0, number(raw_y if raw_y else raw_x) / 1000.0


@dataclass(frozen=True)
class FileSpacing:
    """What a file says about its pixel spacing: (x, y) in mm and where it says so
    (`source`, as refusals quote it), or None and the reader's words for its absence."""

    spacing_mm: tuple[float, float] | None
    source: str = ""
    missing: str = "no pixel spacing in the file"


def decide_spacing(path: Path, mpp: float | None, reported: Callable[[], FileSpacing], limits: Limits = DEFAULT_LIMITS) -> tuple[float, float]:
    """The image's spacing: `mpp` (micrometres per pixel) when given, which overrides the
    file (whose resolution is then not even read: a broken header does not stop a user who
    gives the real spacing); else what the file says; else refused, since pixels are never
    written as millimetres. Either way checked for plausibility."""
    if mpp is not None:
        return mpp_spacing(path, mpp, limits.mpp_option or "the given spacing", limits)
    said = reported()
    if said.spacing_mm is None:
        raise ImageError(path, f"{said.missing}{limits.mpp_hint()}")
    return check_spacing(path, said.spacing_mm, said.source, limits)
