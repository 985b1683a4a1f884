"""Reading images region by region: TIFF of any layout (strips, tiles, pyramids) through
tiffslide/tifffile, vendor whole-slide formats through openslide, everything else through
SimpleITK (as Grand Challenge does, whole image in memory). Pixel spacing comes from the
resolution tags; the pixels equal SimpleITK's for the platform's TIFFs.

Every image comes out as RGB uint8, read region by region through `Slide.read_region`, so
memory stays bounded by the tiles in flight, not the slide's size. The pieces live beside
this module, one concern each: `pixels` (one conversion rule per pixel type), `spacing`
(where spacing comes from and when it is plausible), `limits` (what an image may cost) and
`tiff_layout` (series choice, sparse and truncated chunks). Any file that fails a check is
an `ImageError` naming the file and the problem. The other readers live beside it: `slide`
(the `Slide` interface, and `ArraySlide` for images held whole) and `wsi` (vendor
whole-slide formats through openslide).
"""

from __future__ import annotations

import errno
import math
import os
import stat
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ImageError
from .limits import DEFAULT_LIMITS, Limits
from . import chunks
from .pixels import tiff_converter, to_rgb_uint8
from .dicom import DicomSlide, check_header, is_dicom, is_wsi_file
from .slide import ArraySlide, Slide
from .spacing import FileSpacing, decide_spacing, mpp_property_mm, page_spacing_mm
from .tiff_layout import check_chunks, check_tiff_structure, pick_series, sparse_grid
from .wsi import OPENSLIDE_SUFFIXES, OpenSlideSlide, is_vendor_wsi

__all__ = ["TiffSlide", "check_file", "open_slide"]

WHITE = 255  # what missing (sparse) TIFF tiles read as: glass, i.e. background


class _Band:
    """One decoded full-width band of a strip TIFF, filled by the first thread that needs it."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.pixels: np.ndarray | None = None



class TiffSlide(Slide):
    """Any TIFF, decoded strip by strip or tile by tile for just the region asked for."""

    def __init__(self, path: Path, readers: int = 1, limits: Limits = DEFAULT_LIMITS) -> None:
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
        # Overlapping network tiles share stored strips and tiles: the common layouts decode
        # each once through a small cache of decoded chunks (chunks.ChunkCache).
        self._chunks = chunks.ChunkCache(path, page, self._convert, readers) if self._zarr is None and chunks.supported(page, series) else None
        # Otherwise strips, which span the full width, are read as full-width bands, decoded
        # once and kept while the tiles of that row are read (rather than once per tile
        # column, 16 times for a MIDOG region); a few bands bound the memory.
        self._striped = not page.is_tiled and self._chunks is None
        # One band per reading thread plus spares: fewer and concurrent readers evict bands
        # still in use and decode them again and again (measured: 3.5x slower end to end on a
        # GPU with 8 readers and 4 bands). A band of a 50 000 px wide strip TIFF is 77 MB.
        self.max_bands = readers + 2
        self._bands: OrderedDict[tuple[int, int], _Band] = OrderedDict()
        self._lock = threading.Lock()

    def file_spacing(self) -> FileSpacing:
        tags = page_spacing_mm(self._page, self.path)
        if tags is not None:
            return FileSpacing(tags, "the resolution tags")
        if self._zarr is None:  # e.g. SVS: resolution in the description
            raw = self._properties().get("tiffslide.mpp-x")
            if raw is not None:
                return FileSpacing(mpp_property_mm(self.path, raw, self._properties().get("tiffslide.mpp-y")), "the slide's MPP property")
        return FileSpacing(None, missing="no resolution tags (XResolution/ResolutionUnit), so no pixel spacing")

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
        if self._chunks is not None:
            if self.is_blank(x, y, w, h):
                return np.full((h, w, 3), WHITE, np.uint8)
            return self._chunks.read(x, y, w, h)
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

    def gpu_jpeg_tiles(self, device: Any) -> Any:
        """A `gpu_jpeg.GpuJpegTiles` reading level 0 on `device` when it is a CUDA device, a
        GPU JPEG decoder is installed and this file's JPEG tiles decode there as here; else None."""
        if self._zarr is not None or self._chunks is None:
            return None
        from .gpu_jpeg import GpuJpegTiles

        return GpuJpegTiles.open(self.path, self._page, device, reference=self.read_region)

    def prepare(self, regions: list[tuple[int, int, int, int]]) -> None:
        if self._chunks is not None:
            self._chunks.warm([r for r in regions if not self.is_blank(*r)])

    def read_into(self, out: np.ndarray, x: int, y: int) -> np.ndarray:
        h, w = out.shape[:2]
        if self._chunks is not None and not self.is_blank(x, y, w, h):
            return self._chunks.read(x, y, w, h, out)
        out[:] = self.read_region(x, y, w, h)
        return out

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
            try:
                region = self._slide.read_region((0, int(y * self._slide.level_downsamples[level])), level, (w, min(band, h - y)), as_array=True)
            except Exception as exc:  # a damaged pyramid level (fuzzing found one) names the file, as level 0 does
                raise ImageError(self.path, f"damaged or truncated image ({type(exc).__name__}: {exc})") from None
            rows.append(self._convert(np.asarray(region))[::step, ::step])
        return np.concatenate(rows, 0), float(self._slide.level_downsamples[level] * step)

    @property
    def is_whole_slide(self) -> bool:
        return len(self._slide.ts_tifffile.series[self._index].levels) > 1

    @property
    def level_downsamples(self) -> tuple[float, ...]:
        if self._zarr is not None:  # no pyramid reader for these layouts
            return (1.0,)
        return tuple(float(d) for d in self._slide.level_downsamples)

    def read_level(self, level: int, x: int, y: int, w: int, h: int) -> np.ndarray:
        if level == 0:
            return self.read_region(x, y, w, h)
        try:
            region = np.asarray(self._slide.read_region((x, y), level, (w, h), as_array=True))
        except Exception as exc:  # codecs raise their own types for damaged data
            raise ImageError(self.path, f"damaged or truncated image ({type(exc).__name__}: {exc})") from None
        return self._convert(region)

    def close(self) -> None:
        if self._chunks is not None:
            self._chunks.close()
        self._slide.close()



def _sitk_reason(exc: RuntimeError) -> str:
    """The one informative line of a SimpleITK exception (it leads with C++ file names)."""
    for line in reversed(str(exc).splitlines()):
        if "ERROR" in line:
            return line.split(":", 1)[-1].split("): ", 1)[-1].strip()
    return str(exc).strip().splitlines()[-1]


# No codec SimpleITK reads expands a file by more than deflate's ~1032:1 (an all-zero image):
# a header promising more is damaged, and decoding it would allocate that much before failing
# (fuzzing found small DICOM and NRRD files that cost over 2 GB this way). Below the floor the
# allocation is harmless, so only large promises are checked.
MAX_EXPANSION = 1100
EXPANSION_FLOOR_BYTES = 64 * 2**20


def _check_expansion(path: Path, size: tuple[int, ...], nbytes: int) -> None:
    stored = path.stat().st_size
    if nbytes > EXPANSION_FLOOR_BYTES and nbytes > MAX_EXPANSION * stored:
        raise ImageError(
            path,
            f"the header says {' x '.join(map(str, size))} px ({nbytes / 2**20:,.0f} MB decoded), more than a file "
            f"of {stored:,} bytes can hold: damaged or truncated",
        )


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
        _check_expansion(path, size, nbytes)
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
        if "allocate memory" in reason or "bad_alloc" in reason:  # under a memory ceiling: not a damaged file
            raise ImageError(path, f"out of memory decoding it whole ({reason}); give the run more memory, or save the image as a tiled TIFF") from None
        raise ImageError(path, f"damaged or truncated image ({reason})") from None
    if image.GetDimension() != 2:
        raise ImageError(path, f"expected a 2-D image, got {image.GetDimension()}-D")
    sx, sy = image.GetSpacing()[:2]
    return pixels, (sx, sy)


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
    """Open an image for detection. The spacing is decided here, once, for every reader
    (`spacing.decide_spacing`): `mpp` (micrometres per pixel) overrides the file's spacing
    and is required when the file has none: pixels are never written as millimetres.
    `readers` is how many threads will read regions at once; `limits` bound what it may cost."""
    path = Path(path)
    if path.is_dir() and is_dicom(path):  # a folder holding one DICOM slide's files
        return _dicom_slide(path, mpp, limits)
    check_file(path)
    if path.suffix.lower() not in {".tif", ".tiff"} and is_wsi_file(path):
        return _dicom_slide(path, mpp, limits)
    check_header(path)  # other DICOM goes to SimpleITK, whose reader allocates gigabytes for damaged headers
    check_tiff_structure(path)
    suffix = path.suffix.lower()
    if suffix in OPENSLIDE_SUFFIXES or (suffix in {".tif", ".tiff"} and is_vendor_wsi(path)):
        return _with_spacing(OpenSlideSlide(path, limits), mpp, limits)

    if suffix in {".tif", ".tiff"} and _is_tiff(path):
        try:
            return _with_spacing(TiffSlide(path, readers, limits), mpp, limits)
        except ImageError:
            raise
        except MemoryError:
            raise ImageError(path, "out of memory while opening the image") from None
        except Exception as exc:  # tifffile/tiffslide raise many types for odd headers
            raise ImageError(path, f"unreadable TIFF ({type(exc).__name__}: {exc})") from None

    pixels, sitk_spacing = _read_sitk(path, limits)
    pixels = to_rgb_uint8(pixels, path)
    # SimpleITK reports (1, 1) for a file without spacing; MHA and friends store mm.
    said = FileSpacing(sitk_spacing, "the image header") if sitk_spacing != (1.0, 1.0) else FileSpacing(None)
    return _with_spacing(ArraySlide(path, pixels, said), mpp, limits)


def _with_spacing(slide: Slide, mpp: float | None, limits: Limits) -> Slide:
    """`slide` with its spacing decided and its first pixel read (to fail here, with the file
    named, on an unsupported pixel layout); closed when refused."""
    try:
        slide.spacing_mm = decide_spacing(slide.path, mpp, slide.file_spacing, limits)
        slide.read_region(0, 0, 1, 1)
    except BaseException:
        slide.close()
        raise
    return slide


def _dicom_slide(path: Path, mpp: float | None, limits: Limits) -> Slide:
    return _with_spacing(DicomSlide(path, limits), mpp, limits)


def _is_tiff(path: Path) -> bool:
    """A TIFF that tifffile can parse; others go to SimpleITK, which names the problem."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            return len(tif.pages) > 0
    except Exception:  # tifffile raises several types for non-TIFF or damaged headers
        return False