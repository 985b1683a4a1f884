"""Reading images region by region: TIFF of any layout (strips, tiles, pyramids) through
tiffslide/tifffile, vendor whole-slide formats through openslide, everything else through
SimpleITK (as Grand Challenge does, whole image in memory). Pixel spacing comes from the
resolution tags; the pixels equal SimpleITK's for the platform's TIFFs.

Every image comes out as RGB uint8, read region by region through `Slide.read_region`, so
memory stays bounded by the tiles in flight, not the slide's size. Conversions are
explicit, one rule per pixel type (the README's table "What bad input gets"): alpha is
dropped, grey is replicated (MinIsWhite inverted), palette goes through its colour map,
CMYK and YCbCr are converted, high-bit data is scaled by its real range. Anything else,
and any file that fails the checks below (spacing, size limits, truncation), is an
`ImageError` naming the file and the problem.
"""

from __future__ import annotations

import errno
import logging
import math
import os
import stat
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .errors import ImageError

log = logging.getLogger(__name__)

OPENSLIDE_SUFFIXES = {".svs", ".ndpi", ".mrxs", ".scn", ".vms", ".vmu", ".bif", ".svslide"}
# Spacings outside this range are not microscopy: 72 or 300 dpi defaults written by
# ordinary image tools would otherwise turn pixels into bogus millimetres.
PLAUSIBLE_MPP = (0.01, 50.0)
# Scanners write x and y spacings that differ in the last digits; each axis then keeps its
# own. A larger difference is a broken header, not a pixel shape, and is refused.
SPACING_TOLERANCE = 0.02
WHITE = 255  # what missing (sparse) TIFF tiles read as: glass, i.e. background


@dataclass(frozen=True)
class Limits:
    """What an image may cost before it is refused, and how the user raises each limit.

    The defaults pass any scanned slide (the largest are ~15 gigapixels, tiles of 256-1024
    px) and refuse headers that would run for hours or exhaust memory."""

    max_megapixels: float = 25_000.0  # width x height of the full-resolution image
    max_chunk_mb: float = 256.0  # one decoded TIFF tile or strip
    max_memory_mb: float = 4096.0  # an image that is decoded whole (PNG, JPEG, MHA, ...)
    # Option names quoted in refusals: `midog detect`'s by default, process.py its own.
    mpp_option: str | None = "--mpp"
    megapixels_option: str = "--max-megapixels"
    chunk_option: str = "--max-chunk-mb"
    memory_option: str = "--max-memory-mb"

    def mpp_hint(self, what: str = "it") -> str:
        return f"; pass {what} with {self.mpp_option}" if self.mpp_option else ""

    def check_pixels(self, path: Path, width: int, height: int) -> None:
        if width <= 0 or height <= 0:
            raise ImageError(path, f"the header gives an empty image ({width} x {height} px)")
        if width * height > self.max_megapixels * 1e6:
            raise ImageError(
                path,
                f"{width} x {height} px ({width * height / 1e9:.1f} gigapixels) is more than the limit of "
                f"{self.max_megapixels:g} megapixels; raise it with {self.megapixels_option} if the image is real",
            )


DEFAULT_LIMITS = Limits()


class Slide:
    """An RGB image of `width` x `height` pixels with `spacing_mm` (x, y) per pixel."""

    path: Path
    width: int
    height: int
    spacing_mm: tuple[float, float]

    def read_region(self, x: int, y: int, w: int, h: int) -> np.ndarray:
        """Pixels [y:y+h, x:x+w] as (h, w, 3) uint8; the region must lie inside the image."""
        raise NotImplementedError

    def thumbnail(self, max_side: int = 2048) -> tuple[np.ndarray, float]:
        """A low-resolution RGB view and its downsample factor, for tissue detection."""
        raise NotImplementedError

    def is_blank(self, x: int, y: int, w: int, h: int) -> bool:
        """True when the file stores no pixels for this region (sparse TIFF tiles)."""
        return False

    @property
    def is_whole_slide(self) -> bool:
        """Pyramidal / vendor slides: tissue detection pays off and is on by default."""
        return False

    def close(self) -> None:
        pass

    def __enter__(self) -> "Slide":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---------------------------------------------------------------------------
# Pixel types
# ---------------------------------------------------------------------------


def high_bit_shift(max_value: int) -> int:
    """Right shift that maps data whose top value is `max_value` onto 0-255: the range is
    rounded up to whole bits, so 12-bit data (4095) shifts by 4 and full 16-bit by 8."""
    return max(0, int(max_value).bit_length() - 8)


def to_rgb_uint8(pixels: np.ndarray, path: Path, shift: int | None = None) -> np.ndarray:
    """(H, W[, C]) grey/RGB(A) array -> (H, W, 3) uint8. 16-bit data is shifted by `shift`
    (default: from the array's own maximum, for images read whole)."""
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    if pixels.ndim != 3:
        raise ImageError(path, f"expected a 2-D colour image, got an array of shape {pixels.shape}")
    if pixels.dtype == np.uint16:
        if shift is None:
            shift = high_bit_shift(int(pixels.max()) if pixels.size else 0)
        pixels = (pixels >> shift).astype(np.uint8) if shift else np.minimum(pixels, 255).astype(np.uint8)
    elif pixels.dtype != np.uint8:
        raise ImageError(path, f"unsupported pixel type {pixels.dtype} (need 8- or 16-bit unsigned integers)")
    channels = pixels.shape[2]
    if channels in (1, 2):  # gray or gray + alpha
        pixels = np.repeat(pixels[:, :, :1], 3, axis=2)
    elif channels in (3, 4):
        pixels = pixels[:, :, :3]
    else:
        raise ImageError(path, f"unsupported number of channels: {channels}")
    return np.ascontiguousarray(pixels)


def cmyk_to_rgb(cmyk: np.ndarray) -> np.ndarray:
    """Uncalibrated CMYK (ink 0-255) -> RGB, the conversion every TIFF reader uses."""
    c, m, y, k = (cmyk[..., i].astype(np.uint32) for i in range(4))
    white = 255 - k
    rgb = [((255 - ch) * white + 127) // 255 for ch in (c, m, y)]
    return np.stack(rgb, -1).astype(np.uint8)


def ycbcr_to_rgb(ycc: np.ndarray, coefficients: tuple[float, float, float] = (0.299, 0.587, 0.114)) -> np.ndarray:
    """Full-range YCbCr (TIFF's default reference black/white) -> RGB."""
    lr, lg, lb = coefficients
    y, cb, cr = (ycc[..., i].astype(np.float32) for i in range(3))
    cb, cr = cb - 128, cr - 128
    r = y + cr * (2 - 2 * lr)
    b = y + cb * (2 - 2 * lb)
    g = (y - lr * r - lb * b) / lg
    return np.clip(np.rint(np.stack([r, g, b], -1)), 0, 255).astype(np.uint8)


def tiff_converter(page: Any, path: Path, sample_max: Callable[[], int]) -> Callable[[np.ndarray], np.ndarray]:
    """The conversion of a TIFF page's decoded samples to RGB uint8, chosen once per file.
    `sample_max` gives the real data range of 16-bit data without a range tag."""
    import tifffile

    P = tifffile.PHOTOMETRIC
    photometric, dtype = page.photometric, np.dtype(page.dtype)
    bits = int(page.bitspersample)
    samples = int(page.samplesperpixel)
    name = getattr(photometric, "name", str(photometric))
    if photometric == P.PALETTE:
        cmap = page.colormap
        if cmap is None:
            raise ImageError(path, "palette image without a colour map")
        cmap = np.asarray(cmap)
        lut = (cmap >> 8 if cmap.max() > 255 else cmap).astype(np.uint8).T  # (entries, 3)
        return lambda a: lut[np.minimum(a[..., 0] if a.ndim == 3 else a, len(lut) - 1)]
    if dtype not in (np.uint8, np.uint16) or page.sampleformat not in (1, None):
        raise ImageError(path, f"unsupported pixel type {dtype} (need 8- or 16-bit unsigned integers)")
    if bits < 8:
        raise ImageError(path, f"{bits}-bit {name.lower()} pixels are not a stained-tissue image (need 8 or more bits per sample)")
    shift = 0
    if dtype == np.uint16:
        tags = page.tags
        tag = tags.get("MaxSampleValue")
        if tag is not None:
            top = int(np.max(tag.value))
        elif bits < 16:
            top = 2**bits - 1
        else:
            top = sample_max()
        shift = high_bit_shift(top)
    if photometric in (P.MINISBLACK, P.MINISWHITE, P.RGB):
        invert = photometric == P.MINISWHITE
        if photometric == P.RGB and samples < 3:
            raise ImageError(path, f"RGB image with {samples} samples per pixel")

        def convert(a: np.ndarray) -> np.ndarray:
            rgb = to_rgb_uint8(a, path, shift)
            return 255 - rgb if invert else rgb

        return convert
    if photometric == P.SEPARATED:
        inkset = page.tags.get("InkSet")
        if samples < 4 or (inkset is not None and int(inkset.value) != 1):
            raise ImageError(path, "separated (ink) colours other than CMYK are not supported")
        return lambda a: cmyk_to_rgb((a >> shift).astype(np.uint8) if shift else a.astype(np.uint8))
    if photometric == P.YCBCR:
        if page.compression in (6, 7):  # the JPEG codec returns RGB already
            return lambda a: to_rgb_uint8(a, path, shift)
        if tuple(getattr(page, "subsampling", None) or (1, 1)) != (1, 1):
            raise ImageError(path, "subsampled YCbCr without JPEG compression is not supported; save it as RGB")
        coef = page.tags.get("YCbCrCoefficients")
        coefficients = tuple(float(v[0]) / float(v[1]) if isinstance(v, tuple) else float(v) for v in _pairs(coef.value)) if coef else (0.299, 0.587, 0.114)
        return lambda a: ycbcr_to_rgb(to_rgb_uint8(a, path, shift), coefficients)  # type: ignore[arg-type]
    raise ImageError(path, f"unsupported colour model {name} (photometric {int(photometric)}); convert it to RGB")


def _pairs(value: Any) -> list[Any]:
    """tifffile gives multi-RATIONAL tags as a flat tuple (n1, d1, n2, d2, ...)."""
    flat = list(value)
    if flat and not isinstance(flat[0], tuple) and len(flat) == 6:
        return [(flat[i], flat[i + 1]) for i in range(0, 6, 2)]
    return flat


# ---------------------------------------------------------------------------
# Spacing
# ---------------------------------------------------------------------------


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


def _check_mpp(path: Path, mpp: float, source: str) -> tuple[float, float]:
    return mpp_spacing(path, mpp, source)


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


# ---------------------------------------------------------------------------
# Readers
# ---------------------------------------------------------------------------


class ArraySlide(Slide):
    """An image held whole in memory (SimpleITK formats and small images)."""

    def __init__(self, path: Path, pixels: np.ndarray, spacing_mm: tuple[float, float]) -> None:
        self.path = path
        self.pixels = pixels
        self.height, self.width = pixels.shape[:2]
        self.spacing_mm = spacing_mm

    def read_region(self, x: int, y: int, w: int, h: int) -> np.ndarray:
        return self.pixels[y : y + h, x : x + w]

    def thumbnail(self, max_side: int = 2048) -> tuple[np.ndarray, float]:
        step = max(1, int(np.ceil(max(self.width, self.height) / max_side)))
        return self.pixels[::step, ::step], float(step)


class _Band:
    """One decoded full-width band of a strip TIFF, filled by the first thread that needs it."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.pixels: np.ndarray | None = None


def pick_series(tif: Any, path: Path) -> int:
    """The full-resolution image of a TIFF: the largest series, or refuse when the file holds
    several images of that size (a stack or time series is not one image)."""
    sizes = []
    for i, s in enumerate(tif.series):
        # Samples, or colour channels stored as separate pages (C of 3 or 4), are one image.
        channels = "YXS" + ("C" if dict(zip(s.axes, s.shape)).get("C", 0) in (3, 4) else "")
        axes = "".join(a for a in s.axes if a not in "SC" or a not in channels)
        if axes != "YX":
            extra = {a: n for a, n in zip(s.axes, s.shape) if a not in channels}
            if all(n == 1 for n in extra.values()):
                axes = "YX"
            else:
                shape = " x ".join(f"{n} {a}" for a, n in extra.items())
                raise ImageError(path, f"holds a stack of images ({shape}, axes {s.axes}); expected one 2-D image")
        h, w = (n for a, n in zip(s.axes, s.shape) if a in "YX")
        sizes.append((w * h, i, w, h))
    if not sizes:
        raise ImageError(path, "holds no image")
    best = max(sizes)
    if sum(1 for s in sizes if s[0] == best[0]) > 1:
        raise ImageError(path, f"holds {sum(1 for s in sizes if s[0] == best[0])} full-size images of {best[2]} x {best[3]} px; expected one")
    if len(sizes) > 1:
        log.info("%s: reading image %d of %d (%d x %d px), the largest in the file", path, best[1] + 1, len(sizes), best[2], best[3])
        if best[1] != 0:
            log.warning("%s: holds %d images; reading the full-resolution one, image %d (%d x %d px)", path, len(sizes), best[1] + 1, best[2], best[3])
    return best[1]


class TiffSlide(Slide):
    """Any TIFF, decoded strip by strip or tile by tile for just the region asked for."""

    def __init__(self, path: Path, mpp: float | None, readers: int = 1, limits: Limits = DEFAULT_LIMITS) -> None:
        import tiffslide
        import zarr

        self._slide = tiffslide.TiffSlide(path)
        self.path = path
        tif = self._slide.ts_tifffile
        self._index = pick_series(tif, path)
        series = tif.series[self._index]
        page = series.levels[0].pages[0]
        self._page = page
        self.height, self.width = (n for a, n in zip(series.axes, series.shape) if a in "YX")
        self._axes = series.axes
        limits.check_pixels(path, self.width, self.height)
        check_chunks(series, path, limits)
        self._blank = sparse_grid(page)
        self._chunk = (page.tilelength, page.tilewidth) if page.is_tiled else (page.rowsperstrip or page.imagelength, page.imagewidth)
        self._convert = tiff_converter(page, path, self._sample_max)
        # tiffslide reads series 0 in the common layouts; anything else through tifffile's zarr view.
        self._zarr = None
        if self._index != 0 or series.axes not in ("YXS", "YX"):
            self._zarr = zarr.open(series.aszarr(level=0), mode="r")
        if mpp is not None:
            self.spacing_mm = mpp_spacing(path, mpp, f"{limits.mpp_option or 'the given spacing'}", limits)
        else:
            tags = page_spacing_mm(page, path)
            if tags is None and self._zarr is None:  # e.g. SVS: resolution in the description
                raw = self._properties().get("tiffslide.mpp-x")
                if raw is not None:
                    raw_y = self._properties().get("tiffslide.mpp-y") or raw
                    tags = check_spacing(path, (_number(path, raw) / 1000.0, _number(path, raw_y) / 1000.0), "the slide's MPP property", limits)
            if tags is None:
                raise ImageError(path, f"no resolution tags (XResolution/ResolutionUnit), so no pixel spacing{limits.mpp_hint()}")
            self.spacing_mm = check_spacing(path, tags, "the resolution tags", limits)
        # Strips span the full width: reading tile by tile would decode every strip once per
        # tile column (16 times for a MIDOG region). Full-width bands are decoded once and
        # kept while the tiles of that row are read; a few bands bound the memory.
        self._striped = not page.is_tiled
        # One band per reading thread plus spares: fewer and concurrent readers evict bands
        # still in use and decode them again and again (measured: 3.5x slower end to end on a
        # GPU with 8 readers and 4 bands). A band of a 50 000 px wide strip TIFF is 77 MB.
        self.max_bands = readers + 2
        self._bands: OrderedDict[tuple[int, int], _Band] = OrderedDict()
        self._lock = threading.Lock()
        self.read_region(0, 0, 1, 1)  # fail here, with the file named, on an unsupported pixel layout

    def _properties(self) -> dict[str, Any]:
        try:
            return self._slide.properties
        except Exception as exc:  # tiffslide's metadata parser raises on odd descriptions
            raise ImageError(self.path, f"cannot read the slide's metadata ({type(exc).__name__}: {exc})") from None

    def _sample_max(self) -> int:
        """Highest 16-bit value of the image, from its smallest pyramid level (or the image)."""
        series = self._slide.ts_tifffile.series[self._index]
        level = series.levels[-1]
        if level.size > 64e6:
            raise ImageError(self.path, "16-bit image without MaxSampleValue too large to measure its range; add the tag")
        try:
            return int(level.asarray().max())
        except Exception as exc:
            raise ImageError(self.path, f"damaged or truncated image ({type(exc).__name__}: {exc})") from None

    def _raw(self, x: int, y: int, w: int, h: int) -> np.ndarray:
        if self._zarr is None:
            return np.asarray(self._slide.read_region((x, y), 0, (w, h), as_array=True))
        z = self._zarr
        if self._axes.endswith(("SYX", "CYX")):
            return np.moveaxis(np.asarray(z[..., :, y : y + h, x : x + w]).reshape(-1, h, w), 0, -1)
        region = np.asarray(z[..., y : y + h, x : x + w, :] if self._axes.endswith("S") else z[..., y : y + h, x : x + w])
        return region.reshape(h, w, -1)

    def _read(self, x: int, y: int, w: int, h: int) -> np.ndarray:
        if self.is_blank(x, y, w, h):
            return np.full((h, w, 3), WHITE, np.uint8)
        try:
            region = self._raw(x, y, w, h)
        except ImageError:
            raise
        except Exception as exc:  # codecs raise their own types for damaged data
            raise ImageError(self.path, f"damaged or truncated image ({type(exc).__name__}: {exc})") from None
        rgb = self._convert(region)
        if self._blank is not None:
            self._whiten_missing(rgb, x, y)
        return rgb

    def _chunk_range(self, x: int, y: int, w: int, h: int) -> tuple[slice, slice]:
        ch, cw = self._chunk
        return slice(y // ch, (y + h - 1) // ch + 1), slice(x // cw, (x + w - 1) // cw + 1)

    def is_blank(self, x: int, y: int, w: int, h: int) -> bool:
        if self._blank is None:
            return False
        rows, cols = self._chunk_range(x, y, w, h)
        return bool(self._blank[rows, cols].all())

    def _whiten_missing(self, rgb: np.ndarray, x: int, y: int) -> None:
        """Missing tiles inside a partly stored region read as glass, not black."""
        h, w = rgb.shape[:2]
        rows, cols = self._chunk_range(x, y, w, h)
        ch, cw = self._chunk
        for r, c in zip(*np.nonzero(self._blank[rows, cols])):
            y0, x0 = (rows.start + r) * ch - y, (cols.start + c) * cw - x
            rgb[max(0, y0) : max(0, y0 + ch), max(0, x0) : max(0, x0 + cw)] = WHITE

    def read_region(self, x: int, y: int, w: int, h: int) -> np.ndarray:
        if not self._striped:
            return self._read(x, y, w, h)
        # The cache lock is held only to find a band's entry; decoding happens under the
        # band's own lock, so threads decode different bands at the same time.
        with self._lock:
            band = self._bands.get((y, h))
            if band is None:
                band = self._bands[(y, h)] = _Band()
                while len(self._bands) > self.max_bands:
                    self._bands.popitem(last=False)
        with band.lock:
            if band.pixels is None:
                band.pixels = self._read(0, y, self.width, h)
        return band.pixels[:, x : x + w]

    def thumbnail(self, max_side: int = 2048) -> tuple[np.ndarray, float]:
        if self._zarr is not None:  # no pyramid reader: stride over the image in bands
            step = max(1, int(np.ceil(max(self.width, self.height) / max_side)))
            band = max(step, 1024 - 1024 % step)
            rows = [self._read(0, y, self.width, min(band, self.height - y))[::step, ::step] for y in range(0, self.height, band)]
            return np.concatenate(rows, 0), float(step)
        dims = self._slide.level_dimensions
        # The smallest level that still has at least max_side/4 px, then stride down.
        level = max((i for i, (w, h) in enumerate(dims) if max(w, h) >= max_side // 4), default=0)
        w, h = dims[level]
        step = max(1, int(np.ceil(max(w, h) / max_side)))
        rows = []
        # Read in bands so a big level is never held whole.
        band = 1024 - (1024 % step) if step < 1024 else step
        for y in range(0, h, band):
            region = self._slide.read_region((0, int(y * self._slide.level_downsamples[level])), level, (w, min(band, h - y)), as_array=True)
            rows.append(self._convert(np.asarray(region))[::step, ::step])
        return np.concatenate(rows, 0), float(self._slide.level_downsamples[level] * step)

    @property
    def is_whole_slide(self) -> bool:
        return len(self._slide.ts_tifffile.series[self._index].levels) > 1

    def close(self) -> None:
        self._slide.close()


def _number(path: Path, raw: Any) -> float:
    try:
        return float(raw)
    except (TypeError, ValueError):
        raise ImageError(path, f"the slide's MPP property {raw!r} is not a number") from None


def sparse_grid(page: Any) -> np.ndarray | None:
    """(rows, cols) of tiles or strips the file does not store (offset or byte count 0),
    or None when every one is stored."""
    offsets, counts = np.asarray(page.dataoffsets, np.int64), np.asarray(page.databytecounts, np.int64)
    missing = (offsets == 0) | (counts == 0)
    if not missing.any():
        return None
    if page.is_tiled:
        rows, cols = -(-page.imagelength // page.tilelength), -(-page.imagewidth // page.tilewidth)
    else:
        rows, cols = -(-page.imagelength // (page.rowsperstrip or page.imagelength)), 1
    per_plane = rows * cols
    if len(missing) < per_plane:
        return None
    # Planar-separate files store one plane after another: a pixel is missing when every plane is.
    return missing[: len(missing) // per_plane * per_plane].reshape(-1, rows, cols).all(0)


def check_chunks(series: Any, path: Path, limits: Limits) -> None:
    """Refuse tiles or strips that would decode to more than the limit, and files whose tiles
    or strips end beyond the end of the file (truncated downloads read as black otherwise)."""
    size = series.parent.filehandle.size
    for level in series.levels:
        for page in level.pages:
            if page is None:
                continue
            if page.is_tiled:
                h, w, kind = page.tilelength, page.tilewidth, "tile"
            else:
                h, w, kind = page.rowsperstrip or page.imagelength, page.imagewidth, "strip"
            h = min(h, page.imagelength) if kind == "strip" else h
            samples = 1 if page.planarconfig == 2 else page.samplesperpixel
            mb = h * w * samples * np.dtype(page.dtype).itemsize / 2**20 if page.dtype is not None else 0
            if mb > limits.max_chunk_mb:
                raise ImageError(
                    path,
                    f"one {kind} of {w} x {h} px decodes to {mb:.0f} MB, more than the limit of {limits.max_chunk_mb:g} MB; "
                    f"raise it with {limits.chunk_option} if the image is real",
                )
            if size is None:
                continue
            offsets, counts = np.asarray(page.dataoffsets, np.int64), np.asarray(page.databytecounts, np.int64)
            stored = (offsets > 0) & (counts > 0)
            beyond = stored & (offsets + counts > size)
            if beyond.any():
                raise ImageError(
                    path,
                    f"damaged or truncated: {int(beyond.sum())} of {len(offsets)} {kind}s end beyond the end of the file "
                    f"({size} bytes); the file was cut short",
                )


class OpenSlideSlide(Slide):
    """Whole-slide formats: regions are decoded on demand, never the whole level."""

    def __init__(self, path: Path, mpp: float | None, limits: Limits = DEFAULT_LIMITS) -> None:
        import openslide

        try:
            self._slide = openslide.OpenSlide(str(path))
        except openslide.OpenSlideError as exc:
            raise ImageError(path, f"cannot open whole-slide image ({exc})") from None
        self.path = path
        self.width, self.height = self._slide.dimensions
        limits.check_pixels(path, self.width, self.height)
        if mpp is None:
            props = self._slide.properties
            raw = props.get(openslide.PROPERTY_NAME_MPP_X)
            if raw is None:
                raise ImageError(path, f"no pixel spacing (microns per pixel) in the slide{limits.mpp_hint()}")
            raw_y = props.get(openslide.PROPERTY_NAME_MPP_Y) or raw
            spacing = (_number(path, raw) / 1000.0, _number(path, raw_y) / 1000.0)
            self.spacing_mm = check_spacing(path, spacing, "the slide's MPP property", limits)
        else:
            self.spacing_mm = mpp_spacing(path, mpp, limits.mpp_option or "the given spacing", limits)

    def read_region(self, x: int, y: int, w: int, h: int) -> np.ndarray:
        region = np.asarray(self._slide.read_region((x, y), 0, (w, h)))
        return region[:, :, :3]

    def thumbnail(self, max_side: int = 2048) -> tuple[np.ndarray, float]:
        thumb = np.asarray(self._slide.get_thumbnail((max_side, max_side)).convert("RGB"))
        return thumb, self.width / thumb.shape[1]

    @property
    def is_whole_slide(self) -> bool:
        return True

    def close(self) -> None:
        self._slide.close()


def _sitk_reason(exc: RuntimeError) -> str:
    """The one informative line of a SimpleITK exception (it leads with C++ file names)."""
    for line in reversed(str(exc).splitlines()):
        if "ERROR" in line:
            return line.split(":", 1)[-1].split("): ", 1)[-1].strip()
    return str(exc).strip().splitlines()[-1]


def _read_sitk(path: Path, limits: Limits = DEFAULT_LIMITS) -> tuple[np.ndarray, tuple[float, float]]:
    import SimpleITK as sitk

    try:
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        reader.ReadImageInformation()  # the header only: refuse absurd sizes before decoding
        size = reader.GetSize()
        if len(size) >= 2:
            limits.check_pixels(path, int(size[0]), int(size[1]))
        # "8-bit unsigned integer" and friends: the only place SimpleITK names a type's width.
        bits = next((int(w.split("-")[0]) for w in sitk.GetPixelIDValueAsString(reader.GetPixelID()).split() if w.endswith("-bit")), 64)
        nbytes = math.prod(size) * reader.GetNumberOfComponents() * bits // 8
        if nbytes > limits.max_memory_mb * 2**20:
            raise ImageError(
                path,
                f"decoding {' x '.join(map(str, size))} px whole needs more than the limit of {limits.max_memory_mb:g} MB; "
                f"raise it with {limits.memory_option}, or save the image as a tiled TIFF",
            )
        image = reader.Execute()
        pixels = sitk.GetArrayFromImage(image)
    except RuntimeError as exc:
        reason = _sitk_reason(exc)
        if "Unable to determine ImageIO reader" in reason:
            raise ImageError(path, "not an image in a readable format") from None
        raise ImageError(path, f"damaged or truncated image ({reason})") from None
    if image.GetDimension() != 2:
        raise ImageError(path, f"expected a 2-D image, got {image.GetDimension()}-D")
    sx, sy = image.GetSpacing()[:2]
    return pixels, (sx, sy)


def _is_vendor_wsi(path: Path) -> bool:
    import openslide

    try:
        fmt = openslide.OpenSlide.detect_format(str(path))
    except Exception:  # detect_format raises on some unreadable files; SimpleITK will report those
        return False
    return fmt is not None and fmt != "generic-tiff"


def check_file(path: Path) -> None:
    """The file-system problems, each in its own words rather than "file not found"."""
    try:
        info = path.stat()
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ImageError(path, "symbolic link loop") from None
        if exc.errno == errno.ENOENT:
            broken = path.is_symlink()
            raise ImageError(path, "symbolic link to a missing file" if broken else "file not found") from None
        if exc.errno == errno.EACCES:
            raise ImageError(path, "permission denied") from None
        raise ImageError(path, exc.strerror or str(exc)) from None
    if stat.S_ISDIR(info.st_mode):
        raise ImageError(path, "is a directory, not an image file")
    if not stat.S_ISREG(info.st_mode):
        raise ImageError(path, "not a regular file")
    if info.st_size == 0:
        raise ImageError(path, "empty file (0 bytes)")
    if not os.access(path, os.R_OK):
        raise ImageError(path, "permission denied")


def open_slide(path: str | Path, mpp: float | None = None, readers: int = 1, limits: Limits = DEFAULT_LIMITS) -> Slide:
    """Open an image for detection. `mpp` (micrometres per pixel) overrides the file's spacing
    and is required when the file has none: pixels are never written as millimetres.
    `readers` is how many threads will read regions at once; `limits` bound what it may cost."""
    path = Path(path)
    check_file(path)
    suffix = path.suffix.lower()
    if suffix in OPENSLIDE_SUFFIXES or (suffix in {".tif", ".tiff"} and _is_vendor_wsi(path)):
        return OpenSlideSlide(path, mpp, limits)

    if suffix in {".tif", ".tiff"} and _is_tiff(path):
        try:
            return TiffSlide(path, mpp, readers, limits)
        except ImageError:
            raise
        except MemoryError:
            raise ImageError(path, "out of memory while opening the image") from None
        except Exception as exc:  # tifffile/tiffslide raise many types for odd headers
            raise ImageError(path, f"unreadable TIFF ({type(exc).__name__}: {exc})") from None

    pixels, sitk_spacing = _read_sitk(path, limits)
    pixels = to_rgb_uint8(pixels, path)
    if mpp is not None:
        spacing = mpp_spacing(path, mpp, limits.mpp_option or "the given spacing", limits)
    elif sitk_spacing != (1.0, 1.0):
        spacing = check_spacing(path, sitk_spacing, "the image header", limits)  # MHA and friends store mm
    else:
        raise ImageError(path, f"no pixel spacing in the file{limits.mpp_hint()}")
    return ArraySlide(path, pixels, spacing)


def _is_tiff(path: Path) -> bool:
    """A TIFF that tifffile can parse; others go to SimpleITK, which names the problem."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            return len(tif.pages) > 0
    except Exception:  # tifffile raises several types for non-TIFF or damaged headers
        return False
