"""Damaged is not sparse (issue 21): a TIFF chunk whose offset or byte count tag is missing or
unreadable, whose table has the wrong length, or that lies over the header or past the end
of the file is refused with one line, by every reader path; only a byte count present and 0
is sparse and reads as background."""

from __future__ import annotations

import json
import re
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

import midog.slides.readers
from conftest import ROOT
from crafted import write_tiff
from midog.commands.cli import main
from midog.errors import ImageError
from midog.slides.readers import open_slide

sys.path.insert(0, str(ROOT))
import process  # noqa: E402

RGB = np.random.default_rng(21).integers(0, 255, (512, 512, 3), dtype=np.uint8)
CM = {"resolution": (40000, 40000), "resolutionunit": "CENTIMETER"}


def detect(args: list[str], capsys) -> tuple[int, str]:
    code = main(["detect", *args, "--no-progress", "--device", "cpu"])
    return code, capsys.readouterr().err


def truncated(tmp_path: Path, n: int = 200) -> Path:
    """The issue's file: a good 512 x 512 TIFF cut to 200 bytes, its (out-of-line) strip
    offsets lost with the rest, which tifffile reads as a table of no strips."""
    whole = tmp_path / "whole.tiff"
    tifffile.imwrite(whole, RGB, photometric="rgb", rowsperstrip=16)
    cut = tmp_path / "cut.tiff"
    cut.write_bytes(whole.read_bytes()[:n])
    return cut


def patch_tag(path: Path, code: int, *, new_code: int | None = None, value: int | None = None, count: int | None = None) -> Path:
    """Rewrite one IFD entry of a crafted (classic, little-endian) TIFF in place."""
    data = bytearray(path.read_bytes())
    (ifd,) = struct.unpack_from("<I", data, 4)
    (n,) = struct.unpack_from("<H", data, ifd)
    for i in range(n):
        at = ifd + 2 + 12 * i
        tag, kind, cnt = struct.unpack_from("<HHI", data, at)
        if tag == code:
            struct.pack_into("<HHI", data, at, new_code if new_code is not None else tag, kind, count if count is not None else cnt)
            if value is not None:
                struct.pack_into("<I", data, at + 8, value)
            path.write_bytes(bytes(data))
            return path
    raise AssertionError(f"tag {code} not in {path}")


def test_truncated_file_with_mpp_is_refused_and_the_next_image_runs(tmp_path, random_weights, capsys):
    good = tmp_path / "good.tiff"
    tifffile.imwrite(good, RGB, photometric="rgb", **CM)
    cut = truncated(tmp_path)
    out = tmp_path / "out"
    code, err = detect([str(cut), str(good), "--mpp", "0.25", "--weights", str(random_weights), "-o", str(out)], capsys)
    errors = [ln for ln in err.splitlines() if "error:" in ln and "cut.tiff" in ln]
    assert code == 1 and len(errors) == 1, err
    assert "damaged or truncated: its strip offsets tag (273) is missing or cannot be read" in errors[0]
    assert not (out / "cut.json").exists() and (out / "good.json").is_file()
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "damage, message",
    [
        (dict(code=273, new_code=65000), "strip offsets tag (273) is missing"),
        (dict(code=279, new_code=65001), "strip byte counts tag (279) is missing"),
        (dict(code=273, value=4), "start inside the 8-byte TIFF header"),
        (dict(code=273, value=0), "start inside the 8-byte TIFF header"),  # offset 0 with data is not sparse
        (dict(code=273, value=10_000_000), "end beyond the end of the file"),
        (dict(code=279, value=10_000_000), "end beyond the end of the file"),
    ],
)
def test_damaged_chunk_tables_are_refused(tmp_path, damage, message):
    path = patch_tag(write_tiff(tmp_path / "bad.tiff", 64, 64, RGB[:64, :64]), **damage)
    with pytest.raises(ImageError, match=re.escape(message)):
        open_slide(path, mpp=0.25)


def test_a_table_of_the_wrong_length_is_refused(tmp_path):
    path = write_tiff(tmp_path / "tiled.tiff", 64, 64, RGB[:64, :64], tile=16)  # 16 tiles
    patch_tag(path, 325, count=3)
    with pytest.raises(ImageError, match=r"damaged: its tile table lists 16 offsets and 3 byte counts for 16 tiles"):
        open_slide(path, mpp=0.25)


def test_sparse_tiles_are_still_background(tmp_path):
    sparse = write_tiff(tmp_path / "sparse.tiff", 1024, 1024, tile=256)  # every offset and count 0
    with open_slide(sparse) as s:
        assert s.is_blank(0, 0, 1024, 1024)
        assert (s.read_region(0, 0, 64, 64) == 255).all()


@pytest.mark.parametrize("reader", ["simpleitk", "openslide-name"])
def test_every_reader_path_gets_the_same_rule(tmp_path, monkeypatch, reader):
    """The structure check runs before any reader is chosen: a damaged TIFF read through
    SimpleITK, or named like a vendor slide, is refused with the same line."""
    cut = truncated(tmp_path)
    if reader == "simpleitk":
        monkeypatch.setattr(midog.slides.readers, "_is_tiff", lambda p: False)
    else:
        cut = cut.rename(cut.with_suffix(".svs"))
    with pytest.raises(ImageError, match="strip offsets tag"):
        open_slide(cut, mpp=0.25)


def test_process_reports_the_damaged_file_and_keeps_the_good_one(tmp_path, random_weights, monkeypatch):
    inp, out = tmp_path / "input", tmp_path / "output"
    inp.mkdir()
    truncated(inp)
    (inp / "whole.tiff").unlink()
    tifffile.imwrite(inp / "good.tiff", RGB, photometric="rgb", **CM)
    code = process.main(["--input", str(inp), "--output", str(out), "--weights", str(random_weights), "--device", "cpu"])
    cases = {c["filename"]: c for c in json.loads((out / "results.json").read_text())}
    assert code == 1
    assert "strip offsets tag" in cases["cut.tiff"]["error"] and cases["good.tiff"]["error"] is None
