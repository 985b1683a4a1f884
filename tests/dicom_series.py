"""DICOM whole-slide series for the tests, made by tools nobody here wrote: `wsidicomizer`
converts our synthetic pyramidal TIFFs; pydicom rewrites a level as TILED_SPARSE (only the
frames holding tissue, each with its position) or splits it across two files; and the
hostile variants (truncated, a level removed, two slides mixed, a wrong transfer syntax)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

WSI_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.77.1.6"


def dicomize(tiff: Path, folder: Path) -> list[Path]:
    """The series `wsidicomizer` makes of `tiff` (one file per pyramid level)."""
    from wsidicomizer import WsiDicomizer

    return [Path(p) for p in WsiDicomizer.convert(tiff, folder, workers=1, include_label=False, include_overview=False)]


def levels(folder: Path) -> list[Path]:
    """The series' VOLUME files, largest first."""
    import pydicom

    found = []
    for path in folder.glob("*.dcm"):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        if ds.SOPClassUID == WSI_SOP_CLASS and ds.ImageType[2] == "VOLUME":
            found.append((-int(ds.TotalPixelMatrixColumns), path))
    return [p for _, p in sorted(found)]


def _frames(ds) -> list[bytes]:
    from pydicom.encaps import generate_frames

    return list(generate_frames(ds.PixelData, number_of_frames=int(ds.NumberOfFrames)))


def _position(ds, col: int, row: int):
    """A frame's PlanePositionSlideSequence item: its pixel position and where that lies on
    the slide (origin + column and row steps along the image's orientation)."""
    from pydicom.dataset import Dataset

    origin = ds.TotalPixelMatrixOriginSequence[0]
    dy, dx = (float(v) for v in ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing)
    o = [float(v) for v in ds.ImageOrientationSlide]
    item = Dataset()
    item.XOffsetInSlideCoordinateSystem = round(float(origin.XOffsetInSlideCoordinateSystem) + (col - 1) * dx * o[0] + (row - 1) * dy * o[3], 6)
    item.YOffsetInSlideCoordinateSystem = round(float(origin.YOffsetInSlideCoordinateSystem) + (col - 1) * dx * o[1] + (row - 1) * dy * o[4], 6)
    item.ZOffsetInSlideCoordinateSystem = 0
    item.ColumnPositionInTotalImagePixelMatrix = col
    item.RowPositionInTotalImagePixelMatrix = row
    return item


def sparse_parts(path: Path, parts: int = 1, keep=lambda index: True) -> list[Path]:
    """Rewrite a TILED_FULL level as TILED_SPARSE: only the frames `keep(index)` selects,
    each with its own position, dealt round-robin into `parts` files of the same series
    (new instance UIDs), replacing `path`."""
    import pydicom
    from pydicom.dataset import Dataset
    from pydicom.encaps import encapsulate
    from pydicom.uid import generate_uid

    ds = pydicom.dcmread(path)
    frames = _frames(ds)
    per_row = -(-int(ds.TotalPixelMatrixColumns) // int(ds.Columns))
    placed = [(i, 1 + (i % per_row) * int(ds.Columns), 1 + (i // per_row) * int(ds.Rows)) for i in range(len(frames)) if keep(i)]
    out = []
    for part in range(parts):
        mine = placed[part::parts]
        copy = pydicom.dcmread(path)
        copy.DimensionOrganizationType = "TILED_SPARSE"
        copy.NumberOfFrames = len(mine)
        copy.PerFrameFunctionalGroupsSequence = []
        for _, col, row in mine:
            group = Dataset()
            group.PlanePositionSlideSequence = [_position(ds, col, row)]
            copy.PerFrameFunctionalGroupsSequence.append(group)
        copy.PixelData = encapsulate([frames[i] for i, _, _ in mine], has_bot=True)
        copy.SOPInstanceUID = generate_uid()
        copy.file_meta.MediaStorageSOPInstanceUID = copy.SOPInstanceUID
        target = path.with_name(f"{path.stem}-part{part}.dcm")
        copy.save_as(target, enforce_file_format=True)
        out.append(target)
    path.unlink()
    return out


def blank_frames(path: Path, glass_below: float = 4.0) -> set[int]:
    """Indices of the level's frames that are plain glass (almost no variation)."""
    import io

    import pydicom
    from PIL import Image

    ds = pydicom.dcmread(path)
    return {i for i, f in enumerate(_frames(ds)) if np.asarray(Image.open(io.BytesIO(f))).std() < glass_below}


def truncate(path: Path, keep: float = 0.6) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def set_transfer_syntax(path: Path, uid: str) -> None:
    """Relabel the file's pixel data with another transfer syntax (the bytes stay JPEG)."""
    import pydicom

    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = uid
    ds.save_as(path, enforce_file_format=True)


def copy_series(folder: Path, target: Path) -> Path:
    shutil.copytree(folder, target)
    return target


def concatenate(path: Path, parts: int = 2) -> list[Path]:
    """Split a TILED_FULL level across `parts` files as a DICOM concatenation (the standard's
    way to store a level too large for one file), replacing `path`."""
    import pydicom
    from pydicom.encaps import encapsulate
    from pydicom.uid import generate_uid

    ds = pydicom.dcmread(path)
    frames = _frames(ds)
    step = -(-len(frames) // parts)
    concatenation = generate_uid()
    out = []
    for part in range(parts):
        copy = pydicom.dcmread(path)
        mine = frames[part * step : (part + 1) * step]
        copy.NumberOfFrames = len(mine)
        copy.PixelData = encapsulate(mine, has_bot=True)
        copy.SOPInstanceUIDOfConcatenationSource = ds.SOPInstanceUID
        copy.ConcatenationUID = concatenation
        copy.InConcatenationNumber = part + 1
        copy.InConcatenationTotalNumber = parts
        copy.ConcatenationFrameOffsetNumber = part * step
        copy.SOPInstanceUID = generate_uid()
        copy.file_meta.MediaStorageSOPInstanceUID = copy.SOPInstanceUID
        target = path.with_name(f"{path.stem}-concat{part}.dcm")
        copy.save_as(target, enforce_file_format=True)
        out.append(target)
    path.unlink()
    return out
