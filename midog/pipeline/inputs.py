"""What `midog batch` runs on and what it may skip: the images named by files, folders, globs
and lists; the output each one gets; and the fingerprint sidecars (input size, mtime, hash
of its first and last bytes; weights hash; options) that let a rerun skip what is finished
and redo what changed."""

from __future__ import annotations

import csv
import glob
import hashlib
import io
import json
import logging
from pathlib import Path
from typing import Any

from ..errors import MidogError
from ..slides.dicom import is_dicom
from ..slides.wsi import OPENSLIDE_SUFFIXES

log = logging.getLogger(__name__)

# What a folder is searched for: the types `midog detect` reads (TIFF through tifffile,
# vendor formats through openslide, the rest through SimpleITK).
IMAGE_SUFFIXES = frozenset({".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp", ".mha", ".mhd", ".nrrd", ".nii"} | OPENSLIDE_SUFFIXES)
DICOM_SUFFIXES = (".dcm",)  # in a folder, its DICOM slide's files; the folder is the image
LIST_SUFFIXES = (".txt", ".csv")
REPORT_NAME = "batch-report.json"
REPORT_FIELDS = ("image", "status", "output", "error", "seconds", "tiles")
# One small JSON per finished image, outside DIR/*.json where `midog evaluate` looks.
FINGERPRINT_DIR = "batch-fingerprints"
FINGERPRINT_BYTES = 64 * 1024


# ---------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------


def _images_in(folder: Path) -> list[Path]:
    """The image files under `folder`, and each folder holding DICOM files (*.dcm): a DICOM
    slide is a folder of files, one per pyramid level, and runs as one image."""
    files = [p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()]
    series = {p.parent for p in folder.rglob("*") if p.suffix.lower() in DICOM_SUFFIXES and p.is_file()}
    if is_dicom(folder):  # the folder given is a series, maybe of files without an extension
        series.add(folder)
    return sorted([*files, *series])


def _read_list(path: Path) -> list[Path]:
    """Paths from a text list (one a line, '#' comments) or a CSV (column image/path/file,
    else the first); relative paths are relative to the list's folder."""
    text = path.read_text(encoding="utf-8-sig")
    if path.suffix.lower() == ".csv":
        rows = [r for r in csv.reader(io.StringIO(text)) if r and r[0].strip()]
        header = [c.strip().lower() for c in rows[0]] if rows else []
        column = next((header.index(n) for n in ("image", "path", "file", "filename") if n in header), None)
        entries = [r[column] if column < len(r) else "" for r in rows[1:]] if column is not None else [r[0] for r in rows]
    else:
        entries = text.splitlines()
    entries = [e.strip() for e in entries if e.strip() and not e.strip().startswith("#")]
    return [p if p.is_absolute() else path.parent / p for p in map(Path, entries)]


def collect_images(inputs: list[str]) -> list[Path]:
    """Files, folders (searched recursively), globs and .txt/.csv lists -> absolute paths,
    in the order given, each once. Entries of a list that do not exist are kept: they are
    recorded as failed, so a long list with one stale line still runs."""
    found: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            images = _images_in(path)
            if not images:
                log.warning("midog batch: warning: %s: no images (%s) in this folder", item, ", ".join(sorted(IMAGE_SUFFIXES)))
            found += images
        elif path.is_file() and path.suffix.lower() in LIST_SUFFIXES:
            found += _read_list(path)
        elif path.is_file():
            found.append(path)
        elif glob.has_magic(item):
            matches = sorted(glob.glob(item, recursive=True))
            if not matches:
                raise MidogError(f"{item}: no file matches this pattern")
            for m in map(Path, matches):
                found += _images_in(m) if m.is_dir() else [m]
        else:
            raise MidogError(f"{item}: no such file or folder")
    unique = list(dict.fromkeys(p.resolve() for p in found))
    if not unique:
        raise MidogError("no images found in the inputs")
    return unique


def output_targets(images: list[Path], folder: Path) -> list[Path]:
    """`<stem>.json` in `folder`, the name `midog detect` gives; clashing stems are an error."""
    by_stem: dict[str, list[Path]] = {}
    for image in images:
        by_stem.setdefault(image.stem, []).append(image)
    clashes = {s: ps for s, ps in by_stem.items() if len(ps) > 1}
    if clashes:
        lines = "; ".join(f"{s}: {', '.join(map(str, ps))}" for s, ps in list(clashes.items())[:5])
        raise MidogError(f"several input images share a file name stem, so their outputs would overwrite each other ({lines})")
    if Path(REPORT_NAME).stem in by_stem:
        raise MidogError(f"{by_stem[Path(REPORT_NAME).stem][0]}: its output would overwrite {REPORT_NAME}; rename the image")
    return [folder / f"{image.stem}.json" for image in images]


# ---------------------------------------------------------------------------
# Fingerprints (resume)
# ---------------------------------------------------------------------------


def input_fingerprint(path: Path) -> dict[str, Any] | None:
    """Size, mtime and a hash of the first and last 64 KiB: cheap on a slide of gigabytes,
    and it sees a file replaced or rewritten (TIFF headers sit at either end)."""
    if path.is_dir():  # a DICOM slide: the fingerprints of its files, each by name
        parts = {p.name: input_fingerprint(p) for p in sorted(path.iterdir()) if p.is_file()}
        text = json.dumps(parts, sort_keys=True)
        return {"size": sum(f["size"] for f in parts.values() if f), "files": len(parts), "sha256": hashlib.sha256(text.encode()).hexdigest()}
    try:
        st = path.stat()
        h = hashlib.sha256()
        with open(path, "rb") as f:
            h.update(f.read(FINGERPRINT_BYTES))
            if st.st_size > FINGERPRINT_BYTES:
                f.seek(max(FINGERPRINT_BYTES, st.st_size - FINGERPRINT_BYTES))
                h.update(f.read(FINGERPRINT_BYTES))
    except OSError:
        return None  # missing or unreadable: the worker reports it
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "head_tail_sha256": h.hexdigest()}


def fingerprint_path(target: Path) -> Path:
    return target.parent / FINGERPRINT_DIR / target.name


def is_finished(target: Path, record: dict[str, Any]) -> bool:
    """The output exists and its sidecar records this input, weights and options."""
    if record["input"] is None or not target.is_file():
        return False
    try:
        stored = json.loads(fingerprint_path(target).read_text())
    except (OSError, ValueError):
        return False
    return all(stored.get(k) == record[k] for k in ("input", "weights_sha256", "settings"))
