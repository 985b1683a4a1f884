"""DICOM whole-slide images (VL Whole Slide Microscopy Image series): a folder holding one
slide's files, or any one file of it, opens as one slide with its pyramid levels.

Pixels come through wsidicom, chosen by measurement against OpenSlide 4 (BENCHMARKS.md,
"DICOM readers"): the same pixels, half the CPU time per region and twice the throughput
from four reading threads; both right on TILED_SPARSE series and on a level split across
files as a concatenation. Where a level is held by several instances that are not one
concatenation, wsidicom silently reads only the first (tissue read as glass) and OpenSlide
refuses; wsidicom also skips files it cannot use without a word. So the series is first
checked here from the headers alone (pydicom), and the first frame of each level is
decoded and matched against its transfer syntax: every problem is one `ImageError` naming
the file. Spacing is what the file says (PixelSpacing of the full-resolution level,
`file_spacing`); `open_slide` decides it with --mpp and the plausibility rules. Frames a sparse series does not
store read as white glass, as missing TIFF tiles do.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ImageError, MidogError
from .limits import DEFAULT_LIMITS, Limits
from .slide import Slide
from .spacing import FileSpacing

__all__ = ["WSI_SOP_CLASS", "DicomSeries", "DicomSlide", "is_dicom", "is_wsi_file", "read_series"]

WSI_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.77.1.6"  # VL Whole Slide Microscopy Image Storage
# What the reader decodes (wsidicom, through Pillow and imagecodecs) and viewers commonly store.
TRANSFER_SYNTAXES = {
    "1.2.840.10008.1.2.1": "Explicit VR Little Endian",
    "1.2.840.10008.1.2.4.50": "JPEG Baseline",
    "1.2.840.10008.1.2.4.90": "JPEG 2000 Lossless",
    "1.2.840.10008.1.2.4.91": "JPEG 2000",
}
NATIVE = "1.2.840.10008.1.2.1"
SEQUENCE_END = b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"  # how encapsulated pixel data ends
WHITE = 255
# Slide tiles are 256-2048 px; a frame claimed far larger is a damaged header, and decoding
# one would allocate gigabytes (fuzzing found such headers).
MAX_FRAME_SIDE = 8192


def _has_preamble(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(132)[128:] == b"DICM"
    except OSError:
        return False


def is_dicom(path: Path) -> bool:
    """A DICOM file (by its "DICM" marker), or a folder holding at least one."""
    if path.is_dir():
        try:
            return any(p.is_file() and _has_preamble(p) for p in path.iterdir())
        except OSError:
            return False
    return _has_preamble(path)


def is_wsi_file(path: Path) -> bool:
    """A DICOM file of a whole-slide series (other DICOM, e.g. one CT frame, is not)."""
    if not _has_preamble(path):
        return False
    import pydicom

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SOPClassUID"])
        return str(ds.get("SOPClassUID", WSI_SOP_CLASS)) == WSI_SOP_CLASS
    except Exception:  # a damaged header: the whole-slide reader names the problem
        return True


def check_header(path: Path) -> None:
    """For DICOM other than a slide, read before SimpleITK, whose reader allocates gigabytes
    for some damaged headers (fuzzing): every value must parse, and the image pixel module
    (Rows, Columns, pixel data) must be there."""
    if not _has_preamble(path):
        return
    import pydicom

    try:
        ds = pydicom.dcmread(path, defer_size=4096)  # large values (the pixels) stay on disk
        for _ in ds.iterall():
            pass
        rows, columns = int(ds.get("Rows") or 0), int(ds.get("Columns") or 0)
        has_pixels = "PixelData" in ds
    except Exception as exc:  # pydicom parses values lazily: a damaged one raises any type when read
        raise ImageError(path, f"damaged DICOM header: a value cannot be read ({type(exc).__name__}: {exc})") from None
    if rows <= 0 or columns <= 0 or not has_pixels:
        raise ImageError(path, "a DICOM file without an image (no Rows, Columns or pixel data)")


def _header(path: Path) -> Any:
    import pydicom

    try:
        return pydicom.dcmread(path, stop_before_pixels=True)
    except Exception as exc:  # pydicom raises many types for damaged headers
        raise ImageError(path, f"damaged or truncated DICOM header ({type(exc).__name__}: {exc})") from None


def _spacing_xy(path: Path, ds: Any) -> tuple[float, float] | None:
    """(x, y) mm per pixel; DICOM's PixelSpacing is (row spacing, column spacing), i.e. (y, x)."""
    try:  # pydicom parses values lazily, so a damaged one raises any type here
        dy, dx = (float(v) for v in ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing)
    except Exception:  # reported as no spacing, which the reader then refuses by name
        return None
    return (dx, dy) if all(math.isfinite(v) and v > 0 for v in (dx, dy)) else None


@dataclass
class Level:
    """One resolution level: its size, spacing and the files (instances) holding it."""

    columns: int
    rows: int
    spacing_mm: tuple[float, float] | None
    files: list[Path] = field(default_factory=list)
    headers: list[Any] = field(default_factory=list)


@dataclass
class DicomSeries:
    """What the headers of one slide's files say: its levels (largest first) and UIDs."""

    folder: Path
    levels: list[Level]
    study_uid: str
    series_uid: str
    frame_of_reference_uid: str

    @property
    def base(self) -> Level:
        return self.levels[0]


def _check_complete(path: Path, ds: Any) -> None:
    """A file cut short: encapsulated pixel data ends with a sequence delimiter, native pixel
    data has a known length. Checked from the file's tail, without reading the frames."""
    size = path.stat().st_size
    if str(ds.file_meta.TransferSyntaxUID) == NATIVE:
        frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
        need = int(ds.Rows) * int(ds.Columns) * int(ds.SamplesPerPixel) * int(ds.BitsAllocated) // 8 * frames
        if size < need:
            raise ImageError(path, f"truncated file: its pixel data needs {need} bytes, the file has {size}")
        return
    with open(path, "rb") as f:
        f.seek(max(0, size - len(SEQUENCE_END)))
        tail = f.read()
    if tail != SEQUENCE_END:
        raise ImageError(path, "truncated file: its pixel data does not end (the file was cut short)")


def _files(path: Path) -> list[Path]:
    folder = path if path.is_dir() else path.parent
    try:
        return sorted(p for p in folder.iterdir() if p.is_file() and _has_preamble(p))
    except OSError as exc:
        raise ImageError(folder, f"cannot list the folder ({exc.strerror or exc})") from None


def read_series(path: Path) -> DicomSeries:
    """The whole-slide series `path` (a folder, or one file of it) belongs to, checked from
    the headers: one slide per folder, supported transfer syntaxes, complete files, a
    full-resolution level, every level covering the same area."""
    try:
        return _read_series(path)
    except MidogError:
        raise
    except Exception as exc:  # pydicom parses values lazily: a damaged one raises any type when read
        raise ImageError(path, f"damaged DICOM header: a value cannot be read ({type(exc).__name__}: {exc})") from None


def _read_series(path: Path) -> DicomSeries:
    folder = path if path.is_dir() else path.parent
    images: list[tuple[Path, Any]] = []
    for p in _files(path):
        ds = _header(p)
        if str(getattr(ds, "SOPClassUID", "")) != WSI_SOP_CLASS:
            if p == path:
                raise ImageError(p, f"a DICOM {getattr(ds.SOPClassUID, 'name', ds.get('SOPClassUID', 'object'))}, not a whole-slide image")
            continue  # annotations, reports and the like beside the slide are not its images
        images.append((p, ds))
    if not images:
        raise ImageError(path, "no DICOM whole-slide image (VL Whole Slide Microscopy) files here")
    if not path.is_dir():
        chosen = str(next(ds.SeriesInstanceUID for p, ds in images if p == path))
        images = [(p, ds) for p, ds in images if str(ds.SeriesInstanceUID) == chosen]
    first_path, first = images[0]
    for p, ds in images[1:]:
        for attr, what in (("SeriesInstanceUID", "series"), ("StudyInstanceUID", "studies"), ("FrameOfReferenceUID", "frames of reference"), ("ContainerIdentifier", "slides")):
            if str(ds.get(attr, "")) != str(first.get(attr, "")):
                raise ImageError(folder, f"holds files of two slides: {p.name} and {first_path.name} belong to different {what} "
                                 f"({attr}); put each slide's files in a folder of its own")
    levels: dict[tuple[int, int], Level] = {}
    for p, ds in images:
        syntax = str(ds.file_meta.get("TransferSyntaxUID", ""))
        if syntax not in TRANSFER_SYNTAXES:
            name = getattr(ds.file_meta.get("TransferSyntaxUID"), "name", syntax) or "none"
            raise ImageError(p, f"transfer syntax {name} ({syntax}) is not one the slide reader decodes "
                             f"({', '.join(TRANSFER_SYNTAXES.values())})")
        _check_complete(p, ds)
        kind = list(ds.get("ImageType", []))
        if len(kind) > 2 and kind[2] != "VOLUME":
            continue  # LABEL, OVERVIEW, THUMBNAIL: not pyramid levels
        key = (int(ds.TotalPixelMatrixColumns), int(ds.TotalPixelMatrixRows))
        if not (0 < int(ds.Rows) <= MAX_FRAME_SIDE and 0 < int(ds.Columns) <= MAX_FRAME_SIDE) or min(key) <= 0:
            raise ImageError(p, f"frames of {ds.Columns} x {ds.Rows} px in a {key[0]} x {key[1]} px image: not a slide's tiling "
                             f"(frames are at most {MAX_FRAME_SIDE} px a side)")
        level = levels.setdefault(key, Level(*key, _spacing_xy(p, ds)))
        level.files.append(p)
        level.headers.append(ds)
    if not levels:
        raise ImageError(path, "the series holds no pyramid level (VOLUME image), only labels or overviews")
    ordered = sorted(levels.values(), key=lambda lv: -lv.columns * lv.rows)
    for level in ordered:
        _check_instances(folder, level)
    base = ordered[0]
    kind = list(base.headers[0].get("ImageType", []))
    if len(kind) > 3 and kind[3] == "RESAMPLED":
        raise ImageError(base.files[0], f"the full-resolution level is missing: the largest level in {folder} "
                         f"({base.columns} x {base.rows} px) is a RESAMPLED (downsampled) one")
    for level in ordered[1:]:
        _check_extent(base, level)
    return DicomSeries(folder, ordered, str(first.StudyInstanceUID), str(first.SeriesInstanceUID), str(first.get("FrameOfReferenceUID", "")))


def _check_instances(folder: Path, level: Level) -> None:
    """Several files of one level must be one concatenation, whole: OpenSlide refuses other
    splits and wsidicom reads only one of them."""
    names = ", ".join(p.name for p in level.files)
    uids = {str(ds.get("ConcatenationUID", "")) for ds in level.headers}
    if uids == {""} and len(level.files) == 1:
        return
    if len(uids) != 1 or "" in uids:
        raise ImageError(folder, f"the {level.columns} x {level.rows} px level is held by several instances that are not "
                         f"one concatenation ({names}): focal planes, optical paths or a split the reader does not support")
    total = int(level.headers[0].get("InConcatenationTotalNumber", len(level.files)) or len(level.files))
    if total != len(level.files):
        raise ImageError(level.files[0], f"part of a concatenation of {total} files, of which {len(level.files)} are here ({names}): "
                         "a part of the level is missing")


def _check_extent(base: Level, level: Level) -> None:
    """A level of another slide shows as one that does not cover the base level's area."""
    if base.spacing_mm is None or level.spacing_mm is None:
        return
    for axis, n0, n, s0, s in (("width", base.columns, level.columns, base.spacing_mm[0], level.spacing_mm[0]),
                               ("height", base.rows, level.rows, base.spacing_mm[1], level.spacing_mm[1])):
        if abs(n0 * s0 - n * s) > 2 * s:  # a downsampled level rounds up by up to one of its pixels
            raise ImageError(level.files[0], f"this level's {axis} ({n * s:.4g} mm) differs from the full-resolution level's "
                             f"({n0 * s0:.4g} mm in {base.files[0].name}): a level of another slide?")


class DicomSlide(Slide):
    """A DICOM whole-slide series, read through wsidicom after the headers are checked."""

    is_whole_slide = True

    def __init__(self, path: Path, limits: Limits = DEFAULT_LIMITS) -> None:
        from wsidicom import WsiDicom

        self.path = path
        self.series = read_series(path)
        base = self.series.base
        self.width, self.height = base.columns, base.rows
        limits.check_pixels(base.files[0], self.width, self.height)
        if base.spacing_mm is None:  # wsidicom places levels by their spacing and refuses without it
            raise ImageError(base.files[0], "no usable PixelSpacing in the full-resolution level; the DICOM reader needs it "
                             "to place the pyramid levels, so --mpp cannot stand in for it")
        try:
            self._wsi = WsiDicom.open([p for level in self.series.levels for p in level.files])
        except Exception as exc:  # wsidicom raises its own and pydicom's types
            raise ImageError(base.files[0], f"cannot open the DICOM series ({type(exc).__name__}: {exc})") from None
        found = sorted(((lv.size.width, lv.size.height), lv.level) for lv in self._wsi.levels)[::-1]
        if [size for size, _ in found] != [(lv.columns, lv.rows) for lv in self.series.levels]:
            self._wsi.close()
            raise ImageError(base.files[0], f"the reader finds levels {[s for s, _ in found]}, the headers say "
                             f"{[(lv.columns, lv.rows) for lv in self.series.levels]}")
        self._numbers = [number for _, number in found]  # wsidicom names a level by log2 of its downsample
        for index in range(len(self._numbers)):  # fail here, with the file named, not mid-run
            self._check_first_frame(index)

    def file_spacing(self) -> FileSpacing:
        return FileSpacing(self.series.base.spacing_mm, "the series' PixelSpacing")  # never None: refused at open

    def _files(self, index: int) -> str:
        return ", ".join(str(p) for p in self.series.levels[index].files)

    def _check_first_frame(self, index: int) -> None:
        """The first frame's bytes are what the transfer syntax says (a JPEG relabelled as
        JPEG 2000 would otherwise decode by luck or fail mid-run), and decode."""
        level = self.series.levels[index]
        syntax = str(level.headers[0].file_meta.TransferSyntaxUID)
        try:
            data = bytes(self._wsi.read_encoded_tile(self._numbers[index], (0, 0)))
        except Exception as exc:  # damaged offsets or fragments
            raise ImageError(self._files(index), f"damaged DICOM frames ({type(exc).__name__}: {exc})") from None
        kind = "JPEG" if data[:2] == b"\xff\xd8" else "JPEG 2000" if data[:2] == b"\xff\x4f" or data[4:8] == b"jP  " else None
        declared = TRANSFER_SYNTAXES[syntax]
        if syntax != NATIVE and (kind is None or not declared.startswith(kind) or (kind == "JPEG" and "2000" in declared)):
            raise ImageError(self._files(index), f"the transfer syntax says {declared}, but the frames are {kind or 'neither JPEG nor JPEG 2000'}: "
                             "a wrong transfer syntax")
        self.read_level(index, 0, 0, 1, 1)

    @property
    def level_downsamples(self) -> tuple[float, ...]:
        return tuple(self.width / lv.columns for lv in self.series.levels)

    def read_level(self, level: int, x: int, y: int, w: int, h: int) -> np.ndarray:
        info = self.series.levels[level]
        down = self.width / info.columns
        lx, ly = int(x / down), int(y / down)
        out = np.full((h, w, 3), WHITE, np.uint8)  # beyond the level's edge: glass
        cw, ch = min(w, info.columns - lx), min(h, info.rows - ly)
        if cw <= 0 or ch <= 0:
            return out
        try:
            region = self._wsi.read_region((lx, ly), self._numbers[level], (cw, ch))
        except Exception as exc:  # codecs and wsidicom raise their own types for damaged frames
            raise ImageError(self._files(level), f"damaged DICOM frames ({type(exc).__name__}: {exc})") from None
        out[:ch, :cw] = np.asarray(region.convert("RGB"))
        return out

    def read_region(self, x: int, y: int, w: int, h: int) -> np.ndarray:
        return self.read_level(0, x, y, w, h)

    def thumbnail(self, max_side: int = 2048) -> tuple[np.ndarray, float]:
        downsamples = self.level_downsamples
        # The smallest level with at least max_side/4 px, then stride down (as TIFF slides do).
        index = max((i for i, lv in enumerate(self.series.levels) if max(lv.columns, lv.rows) >= max_side // 4), default=0)
        w, h = self.series.levels[index].columns, self.series.levels[index].rows
        step = max(1, int(np.ceil(max(w, h) / max_side)))
        rows, band = [], max(step, 1024 - 1024 % step)
        for y in range(0, h, band):
            region = self.read_level(index, 0, int(y * downsamples[index]), w, min(band, h - y))
            rows.append(region[::step, ::step])
        return np.concatenate(rows, 0), float(downsamples[index] * step)

    def close(self) -> None:
        self._wsi.close()
