"""The structure of a TIFF before any pixel is decoded: which series is the image, which
tiles or strips the file leaves out, and chunks too large to decode or cut off by truncation."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ImageError
from .limits import Limits

log = logging.getLogger(__name__)


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
        log.debug("%s: reading image %d of %d (%d x %d px), the largest in the file", path, best[1] + 1, len(sizes), best[2], best[3])
        if best[1] != 0:
            log.warning("%s: holds %d images; reading the full-resolution one, image %d (%d x %d px)", path, len(sizes), best[1] + 1, best[2], best[3])
    return best[1]



# Where each page keeps its chunk table: (offsets tag, byte counts tag) for strips and tiles.
CHUNK_TAGS = {"strip": (273, 279), "tile": (324, 325)}


def chunk_kind(page: Any) -> str:
    return "tile" if page.is_tiled else "strip"


def chunk_table_damage(page: Any, file_size: int | None, header_bytes: int) -> str | None:
    """Why a page's table of tiles or strips cannot be trusted, or None when it can.

    A chunk is sparse (background, never decoded) only when the file says so: its byte
    count is present and 0. A tag that is missing, or that tifffile could not read (it then
    drops the tag and every chunk would read as empty), a table of the wrong length, and a
    stored chunk that lies over the header or past the end of the file are damage: reading
    any of them as sparse turns a truncated download into an all-black "result"."""
    key = getattr(page, "keyframe", None) or page  # a TiffFrame shares its keyframe's layout
    kind = chunk_kind(key)
    tags = getattr(page, "tags", None)
    for code, what in zip(CHUNK_TAGS[kind], ("offsets", "byte counts")):
        if tags is not None and code not in tags:
            return f"damaged or truncated: its {kind} {what} tag ({code}) is missing or cannot be read"
    offsets, counts = np.asarray(page.dataoffsets, np.int64), np.asarray(page.databytecounts, np.int64)
    expected = int(np.prod(key.chunked))
    if len(offsets) != expected or len(counts) != expected:
        return f"damaged: its {kind} table lists {len(offsets)} offsets and {len(counts)} byte counts for {expected} {kind}s"
    stored = counts > 0
    over_header = stored & (offsets < header_bytes)
    if over_header.any():
        return f"damaged: {int(over_header.sum())} of {len(offsets)} {kind}s start inside the {header_bytes}-byte TIFF header"
    if file_size is not None:
        beyond = stored & (offsets + counts > file_size)
        if beyond.any():
            return (
                f"damaged or truncated: {int(beyond.sum())} of {len(offsets)} {kind}s end beyond the end of the file "
                f"({file_size} bytes); the file was cut short"
            )
    return None


def header_bytes(tif: Any) -> int:
    return 16 if tif.is_bigtiff else 8


# A pyramid with its label and macro images has a few dozen pages; a stack of many is refused
# anyway (pick_series). Fuzzing found an 11 KB file whose directory chain yields pages without
# end (tifffile parsed 123 000 of them in 100 s): the walk stops here instead.
MAX_PAGES = 1024
TIFF_MAGIC = (b"II*\0", b"MM\0*", b"II+\0", b"MM\0+")  # classic and BigTIFF, both byte orders


def check_tiff_structure(path: Path) -> None:
    """Refuse a TIFF (by its first bytes, whatever its name) any of whose pages has a damaged
    chunk table, before any reader opens it: tiffslide, openslide and SimpleITK then all
    get the same rule. A file that starts as a TIFF but that tifffile cannot parse at all is
    refused too: SimpleITK, the other readers' fallback, allocated gigabytes reading the
    header of such a 351-byte file (fuzzing)."""
    import tifffile

    with open(path, "rb") as f:
        if f.read(4) not in TIFF_MAGIC:
            return
    try:
        tif = tifffile.TiffFile(path)
    except Exception as exc:  # tifffile raises several types for damaged headers
        raise ImageError(path, f"damaged TIFF header ({type(exc).__name__}: {exc})") from None
    with tif:
        try:
            for n, page in enumerate(tif.pages):  # pages are parsed one by one as the loop reaches them
                if n == MAX_PAGES:
                    raise ImageError(path, f"damaged: more than {MAX_PAGES} pages (image file directories), where a slide has a few; its directory chain may loop")
                problem = chunk_table_damage(page, tif.filehandle.size, header_bytes(tif))
                if problem:
                    raise ImageError(path, problem)
        except ImageError:
            raise
        except Exception as exc:  # a later page's header that tifffile cannot parse, or absurd table values (fuzzing found both)
            raise ImageError(path, f"damaged TIFF structure ({type(exc).__name__}: {exc})") from None


def sparse_grid(page: Any) -> np.ndarray | None:
    """(rows, cols) of tiles or strips the file does not store (byte count 0), or None when
    every one is stored. The table itself was checked by `chunk_table_damage`."""
    counts = np.asarray(page.databytecounts, np.int64)
    missing = counts == 0
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
    """Refuse tiles or strips that would decode to more than the limit, and chunk tables
    that are damaged (`chunk_table_damage`): truncated downloads read as black otherwise."""
    tif = series.parent
    size = tif.filehandle.size
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
            problem = chunk_table_damage(page, size, header_bytes(tif))
            if problem:
                raise ImageError(path, problem)
