"""Hostile and unusual inputs, one test per class of bad input (see docs/bad-input.md, "What bad
input gets"): small hand-crafted files, the untrained random weights, the CPU."""

from __future__ import annotations

import json
import os
import struct
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from conftest import ROOT
from crafted import DOUBLE, RATIONAL, write_tiff
from midog.commands.cli import main
from midog.errors import ImageError, TimeBudgetError
from midog.slides.limits import Limits
from midog.slides.readers import open_slide
from midog.slides.spacing import check_spacing

sys.path.insert(0, str(ROOT))
import process  # noqa: E402

CM = {"resolution": (40000, 40000), "resolutionunit": "CENTIMETER"}  # 0.25 um/px
RNG = np.random.default_rng(11)
RGB = RNG.integers(0, 255, (520, 530, 3), dtype=np.uint8)


def detect(args: list[str], capsys) -> tuple[int, str]:
    code = main(["detect", *args, "--no-progress", "--device", "cpu"])
    return code, capsys.readouterr().err


def error_lines(err: str) -> list[str]:
    return [ln for ln in err.splitlines() if "error:" in ln]


@pytest.fixture()
def good(tmp_path: Path) -> Path:
    path = tmp_path / "good.tiff"
    tifffile.imwrite(path, RGB, photometric="rgb", **CM)
    return path


# 1 and 8: any exception while opening or reading an image is that image's one line -----------


def test_mixed_run_every_good_image_has_its_result(tmp_path, good, random_weights, capsys):
    d = tmp_path / "in"
    d.mkdir()
    bad = {
        "nan.tiff": write_tiff(d / "nan.tiff", 64, 64, RGB[:64, :64], resolution=(DOUBLE, [float("nan")])),
        "inf.tiff": write_tiff(d / "inf.tiff", 64, 64, RGB[:64, :64], resolution=(DOUBLE, [float("inf")])),
        "den0.tiff": write_tiff(d / "den0.tiff", 64, 64, RGB[:64, :64], resolution=(RATIONAL, [(40000, 0)])),
        "zero.tiff": write_tiff(d / "zero.tiff", 64, 64, RGB[:64, :64], resolution=(RATIONAL, [(0, 1)])),
        "unit.tiff": write_tiff(d / "unit.tiff", 64, 64, RGB[:64, :64], unit=9),
        "huge.tiff": write_tiff(d / "huge.tiff", 200_000, 200_000, tile=512),
    }
    (d / "folder.tif").mkdir()
    os.symlink(d / "loop.tif", d / "loop.tif")
    planar = d / "planar.tiff"
    tifffile.imwrite(planar, RGB.transpose(2, 0, 1), photometric="rgb", planarconfig="separate", **CM)
    out = tmp_path / "out"
    images = [*bad.values(), d / "folder.tif", d / "loop.tif", good, planar]
    started = time.monotonic()
    code, err = detect([*map(str, images), "--weights", str(random_weights), "-o", str(out)], capsys)
    assert time.monotonic() - started < 60
    assert code == 1 and "Traceback" not in err
    assert (out / "good.json").is_file() and (out / "planar.json").is_file()
    # planar-separate RGB is a valid layout and reads as the same pixels as contiguous RGB
    assert (out / "good.json").read_text() == (out / "planar.json").read_text()
    lines = error_lines(err)
    expected = {
        "nan.tiff": "XResolution is nan",
        "inf.tiff": "XResolution is inf",
        "den0.tiff": "zero denominator",
        "zero.tiff": "XResolution is zero",
        "unit.tiff": "unknown ResolutionUnit 9",
        "huge.tiff": "more than the limit",
        "folder.tif": "is a directory",
        "loop.tif": "symbolic link loop",
    }
    assert len(lines) == len(expected), lines
    for name, problem in expected.items():
        line = next(ln for ln in lines if name in ln)
        assert problem in line, line
        assert not (out / f"{Path(name).stem}.json").exists()
    assert "8 of 10 images failed" in err


def test_unexpected_exception_is_one_line_and_debug_shows_the_traceback(good, random_weights, tmp_path, capsys, monkeypatch):
    import midog.detector.core

    def boom(*args, **kwargs):
        raise RuntimeError("simulated decoder crash\nsecond line")

    monkeypatch.setattr(midog.detector.core.Detector, "detect", boom)
    out = tmp_path / "o.json"
    code, err = detect([str(good), "--weights", str(random_weights), "-o", str(out)], capsys)
    assert code == 1 and "Traceback" not in err
    assert f"{good}: RuntimeError: simulated decoder crash" in err and "second line" not in err
    code, err = detect([str(good), "--weights", str(random_weights), "-o", str(out), "--debug"], capsys)
    assert code == 1 and "Traceback" in err


def test_library_warnings_only_with_verbose(tmp_path, random_weights, capsys):
    path = write_tiff(tmp_path / "unit.tiff", 64, 64, RGB[:64, :64], unit=9)  # tifffile logs about the tag
    args = [str(path), "--weights", str(random_weights), "-o", str(tmp_path / "x.json")]
    _, err = detect(args, capsys)
    assert "RESUNIT" not in err and len(error_lines(err)) == 1
    _, err = detect([*args, "--verbose"], capsys)
    assert "RESUNIT" in err


# 2: spacing -------------------------------------------------------------------------------------


def test_spacing_is_checked_on_both_axes_and_kept_per_axis(tmp_path, random_weights, capsys):
    absurd_y = write_tiff(tmp_path / "absurd_y.tiff", 64, 64, RGB[:64, :64], extra={283: (RATIONAL, [(1, 1000)])})
    with pytest.raises(ImageError, match="y spacing 1e\\+07 um/px"):
        open_slide(absurd_y)
    apart = write_tiff(tmp_path / "apart.tiff", 64, 64, RGB[:64, :64], extra={283: (RATIONAL, [(44000, 1)])})
    with pytest.raises(ImageError, match="more than 2% apart"):
        open_slide(apart)
    slight = write_tiff(tmp_path / "slight.tiff", 530, 520, RGB, extra={283: (RATIONAL, [(40200, 1)])})
    with open_slide(slight) as s:
        assert s.spacing_mm == (10 / 40000, 10 / 40200)
    for spacing in [(float("nan"), 0.00025), (0.00025, float("inf")), (0.0, 0.00025), (0.00025, -1.0)]:
        with pytest.raises(ImageError, match="is not a spacing"):
            check_spacing(Path("x.tiff"), spacing, "the slide's MPP property")
    out = tmp_path / "slight.json"
    code, err = detect([str(slight), "--weights", str(random_weights), "-o", str(out), "--style", "2022"], capsys)
    assert code == 0, err
    for p in json.loads(out.read_text())["points"]:  # nothing beyond the image in mm on either axis
        assert p["point"][0] <= 530 * 10 / 40000 and p["point"][1] <= 520 * 10 / 40200


@pytest.mark.parametrize("mpp", ["nan", "inf", "0", "-0.25", "72000", "abc"])
def test_implausible_mpp_is_a_usage_error(mpp, good, random_weights, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        detect([str(good), "--weights", str(random_weights), "--mpp", mpp], capsys)
    assert exit_info.value.code == 2
    assert "--mpp" in capsys.readouterr().err


# 3: pixel types ---------------------------------------------------------------------------------


def read_all(path: Path) -> np.ndarray:
    with open_slide(path) as s:
        return s.read_region(0, 0, s.width, s.height)


def test_pixel_types_convert_to_their_rgb_equivalent(tmp_path):
    rgb = RGB[:300, :200]
    cmyk = tmp_path / "cmyk.tiff"
    tifffile.imwrite(cmyk, np.dstack([255 - rgb, np.zeros(rgb.shape[:2], np.uint8)]), photometric="separated", **CM)
    assert (read_all(cmyk) == rgb).all()
    cmyk_k = tmp_path / "cmyk_k.tiff"  # with black ink: the usual uncalibrated formula, within rounding
    k = np.full(rgb.shape[:2], 51, np.uint8)
    tifffile.imwrite(cmyk_k, np.dstack([255 - rgb, k]), photometric="separated", **CM)
    assert np.abs(read_all(cmyk_k).astype(int) - (rgb.astype(int) * 204 / 255)).max() <= 1
    palette = tmp_path / "palette.tiff"
    cmap = RNG.integers(0, 65536, (3, 256)).astype(np.uint16)
    tifffile.imwrite(palette, rgb[..., 0], photometric="palette", colormap=cmap, **CM)
    assert (read_all(palette) == (cmap >> 8).astype(np.uint8).T[rgb[..., 0]]).all()
    ycbcr = tmp_path / "ycbcr.tiff"
    f = rgb.astype(np.float64)
    y = 0.299 * f[..., 0] + 0.587 * f[..., 1] + 0.114 * f[..., 2]
    ycc = np.dstack([y, (f[..., 2] - y) / 1.772 + 128, (f[..., 0] - y) / 1.402 + 128])
    tifffile.imwrite(ycbcr, np.clip(np.rint(ycc), 0, 255).astype(np.uint8), photometric="ycbcr", subsampling=(1, 1), **CM)
    assert np.abs(read_all(ycbcr).astype(int) - rgb).max() <= 2
    white = tmp_path / "miniswhite.tiff"
    tifffile.imwrite(white, 255 - rgb[..., 0], photometric="miniswhite", **CM)
    assert (read_all(white)[..., 0] == rgb[..., 0]).all()


def test_high_bit_data_uses_its_real_range(tmp_path):
    rgb = RGB[:300, :200]
    stored_12 = tmp_path / "bits12.tiff"  # 12-bit data in 16-bit samples, no range tag
    tifffile.imwrite(stored_12, rgb.astype(np.uint16) << 4, photometric="rgb", **CM)
    assert (read_all(stored_12) == rgb).all()
    tagged = tmp_path / "maxsample.tiff"  # the tag wins over the data
    tifffile.imwrite(tagged, rgb.astype(np.uint16) << 2, photometric="rgb", extratags=[(281, "H", 3, (4095,) * 3, True)], **CM)
    assert (read_all(tagged) == rgb >> 2).all()


def test_multi_page_reads_the_full_resolution_image_and_says_so(tmp_path, caplog):
    path = tmp_path / "two.tiff"
    with tifffile.TiffWriter(path) as w:
        w.write(RGB[:30, :20], photometric="rgb", **CM)
        w.write(RGB, photometric="rgb", **CM)
    with caplog.at_level("WARNING"):
        assert (read_all(path) == RGB).all()
    assert "image 2 (530 x 520 px)" in caplog.text
    channels = tmp_path / "channels.tiff"  # R, G and B as three grey pages
    tifffile.imwrite(channels, RGB.transpose(2, 0, 1), photometric="minisblack", metadata={"axes": "CYX"}, **CM)
    assert (read_all(channels) == RGB).all()
    stack = tmp_path / "stack.tiff"
    tifffile.imwrite(stack, np.stack([RGB, RGB]), photometric="rgb", **CM)
    with pytest.raises(ImageError, match="stack of images"):
        open_slide(stack)
    float_image = tmp_path / "float.tiff"
    tifffile.imwrite(float_image, RGB.astype(np.float32), photometric="rgb", **CM)
    with pytest.raises(ImageError, match="unsupported pixel type float32"):
        open_slide(float_image)


def test_cmyk_and_palette_give_the_points_of_their_rgb_equivalent(tmp_path, vector_weights, vectors_dir, capsys):
    """On a reference-vector image with the vector weights, which find candidates there."""
    from PIL import Image

    d = tmp_path / "in"
    d.mkdir()
    rgb = tifffile.imread(vectors_dir / "synthC_512x512.tiff")[..., :3]
    tifffile.imwrite(d / "rgb.tiff", rgb, photometric="rgb", **CM)
    tifffile.imwrite(d / "cmyk.tiff", np.dstack([255 - rgb, np.zeros(rgb.shape[:2], np.uint8)]), photometric="separated", **CM)
    quantized = Image.fromarray(rgb).quantize(256)
    index = np.asarray(quantized)
    lut = np.asarray(quantized.getpalette()[: 3 * 256], np.uint8).reshape(-1, 3)
    lut = np.pad(lut, ((0, 256 - len(lut)), (0, 0)))
    tifffile.imwrite(d / "palette.tiff", index, photometric="palette", colormap=lut.T.astype(np.uint16) * 257, **CM)
    tifffile.imwrite(d / "palette_rgb.tiff", lut[index], photometric="rgb", **CM)
    out = tmp_path / "out"
    names = ["rgb", "cmyk", "palette", "palette_rgb"]
    code, err = detect([*(str(d / f"{n}.tiff") for n in names), "--weights", str(vector_weights), "-o", str(out), "--style", "2022"], capsys)
    assert code == 0, err
    results = {n: (out / f"{n}.json").read_text() for n in names}
    assert json.loads(results["rgb"])["points"] and json.loads(results["palette"])["points"]
    assert results["rgb"] == results["cmyk"] and results["palette"] == results["palette_rgb"]


# 4 and 6: sizes, sparse tiles, truncation, time budget ---------------------------------------------


def test_absurd_sizes_are_refused_at_once(tmp_path):
    huge = write_tiff(tmp_path / "huge.tiff", 200_000, 200_000, tile=512)
    assert huge.stat().st_size < 2_000_000
    started = time.monotonic()
    with pytest.raises(ImageError, match="40.0 gigapixels"):
        open_slide(huge)
    big_tile = write_tiff(tmp_path / "bigtile.tiff", 20_000, 20_000, tile=16384)
    with pytest.raises(ImageError, match="one tile of 16384 x 16384 px decodes to 768 MB"):
        open_slide(big_tile)
    assert time.monotonic() - started < 10
    with open_slide(big_tile, limits=Limits(max_chunk_mb=1024)) as s:  # raised: it opens
        assert s.is_blank(0, 0, 512, 512)


def test_png_header_too_large_to_decode_is_refused(tmp_path):
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 60_000, 60_000, 8, 2, 0, 0, 0)  # 10.8 GB of RGB
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 100)) + chunk(b"IEND", b"")
    path = tmp_path / "bomb.png"
    path.write_bytes(png)
    # No codec expands 69 bytes to 10 GB: the header is damaged, whatever the memory limit.
    with pytest.raises(ImageError, match="more than a file of 69 bytes can hold: damaged"):
        open_slide(path, mpp=0.25)
    # A real image that compresses well (75 MB decoded from ~75 KB) meets the memory limit instead.
    real = tmp_path / "white.png"
    Image.fromarray(np.full((5000, 5000, 3), 255, np.uint8)).save(real)
    with pytest.raises(ImageError, match="--max-memory-mb"):
        open_slide(real, mpp=0.25, limits=Limits(max_memory_mb=32))
    with open_slide(real, mpp=0.25) as slide:
        assert (slide.width, slide.height) == (5000, 5000)


def test_sparse_tiles_are_background_and_answered_fast(tmp_path, random_weights, good, capsys):
    """With the size limit raised, a 200 000 px square of missing tiles plus one stored tile
    runs only the tiles that hold data."""
    pixels = np.full((2048, 2048, 3), 255, np.uint8)
    pixels[:512, :512] = RGB[:512, :512]
    partly = write_tiff(tmp_path / "partly.tiff", 2048, 2048, pixels, tile=512, extra={})
    # Make every tile but the first missing: offsets and byte counts of 0.
    with tifffile.TiffFile(partly) as tif:
        page = tif.pages[0]
        offsets_at, counts_at = page.tags["TileOffsets"].valueoffset, page.tags["TileByteCounts"].valueoffset
    data = bytearray(partly.read_bytes())
    data[offsets_at + 4 : offsets_at + 64] = bytes(60)
    data[counts_at + 4 : counts_at + 64] = bytes(60)
    partly.write_bytes(bytes(data))
    with open_slide(partly) as s:
        assert not s.is_blank(0, 0, 512, 512) and s.is_blank(512, 0, 512, 512)
        assert (s.read_region(500, 0, 24, 8)[:, 12:] == 255).all()  # missing reads as glass
    huge = write_tiff(tmp_path / "huge.tiff", 200_000, 200_000, tile=512)
    out = tmp_path / "out"
    started = time.monotonic()
    code, err = detect([str(huge), str(partly), str(good), "--weights", str(random_weights), "-o", str(out), "--max-megapixels", "50000"], capsys)
    assert time.monotonic() - started < 60, err
    assert code == 0, err
    assert "0 tiles" in next(ln for ln in err.splitlines() if "huge.tiff" in ln)
    assert "(4 tiles, 21 background tiles skipped" in next(ln for ln in err.splitlines() if "partly.tiff" in ln)
    assert json.loads((out / "huge.json").read_text())["points"] == []


def test_truncated_file_is_refused_even_with_mpp(tmp_path, random_weights, capsys):
    whole = tmp_path / "whole.tiff"
    tifffile.imwrite(whole, RGB, photometric="rgb")
    cut = tmp_path / "cut.tiff"
    cut.write_bytes(whole.read_bytes()[:200])
    code, err = detect([str(cut), "--weights", str(random_weights), "--mpp", "0.25", "-o", str(tmp_path / "cut.json")], capsys)
    assert code == 1 and "damaged or truncated: 1 of 1 strips end beyond the end of the file (200 bytes)" in err
    assert not (tmp_path / "cut.json").exists()


def test_time_budget_stops_one_image_and_the_next_still_runs(tmp_path, good, random_weights):
    from midog.detector import Detector
    from midog.pipeline.image import detect_or_error
    from midog.pipeline.run import settle_run

    detector = Detector.from_weights(random_weights, "cpu")
    with pytest.raises(TimeBudgetError, match="over its time budget"):
        detector.detect(good, deadline=time.monotonic() - 1)
    summary, error, _, _ = detect_or_error(detector, good, tmp_path / "a.json", settle_run(random_weights, time_budget=1e-9))
    assert summary is None and "over its time budget of 1e-09 s" in error and not (tmp_path / "a.json").exists()
    summary, error, _, _ = detect_or_error(detector, good, tmp_path / "b.json", settle_run(random_weights, time_budget=600))
    assert error is None and (tmp_path / "b.json").is_file()


# 5: outputs -------------------------------------------------------------------------------------


def test_unwritable_output_is_refused_before_any_work(tmp_path, good, random_weights, capsys, monkeypatch):
    import midog.detector.core

    monkeypatch.setattr(midog.detector.core.Detector, "from_weights", None)  # any detection would crash: it must not start
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, err = detect([str(good), "--weights", str(random_weights), "-o", str(blocker / "sub" / "out.json")], capsys)
    assert code == 2 and "is a file, not a folder" in err and "Traceback" not in err


def test_folder_output_stale_results_and_temp_files(tmp_path, good, random_weights, capsys):
    folder = tmp_path / "results"
    code, err = detect([str(good), "--weights", str(random_weights), "-o", f"{folder}/"], capsys)
    assert code == 0 and (folder / "good.json").is_file(), err
    code, err = detect([str(good), "--weights", str(random_weights), "-o", str(folder)], capsys)  # existing folder
    assert code == 0 and not (folder / "results").exists()
    # a killed run's temporary file is cleaned; an earlier result of a now failing image is removed
    leftover = folder / ".bad.json.abc123.tmp"
    leftover.write_text("{")
    (folder / "bad.json").write_text('{"stale": true}')
    bad = tmp_path / "bad.tiff"
    bad.write_text("not an image")
    code, err = detect([str(bad), str(good), "--weights", str(random_weights), "-o", str(folder)], capsys)
    assert code == 1 and not leftover.exists() and not (folder / "bad.json").exists()
    assert (folder / "good.json").is_file()


# 7: options -------------------------------------------------------------------------------------


@pytest.mark.parametrize("option, value", [("--threshold", "nan"), ("--threshold", "1.5"), ("--threshold", "-0.1"), ("--threshold", "x"), ("--batch-size", "0"), ("--max-megapixels", "-1"), ("--time-budget", "inf")])
def test_bad_numeric_options_are_usage_errors(option, value, good, random_weights, capsys):
    with pytest.raises(SystemExit) as exit_info:
        detect([str(good), "--weights", str(random_weights), option, value], capsys)
    assert exit_info.value.code == 2 and option in capsys.readouterr().err


def test_stored_threshold_is_checked(tmp_path, good, random_weights, capsys):
    import torch

    state = torch.load(random_weights, weights_only=True)
    for stored, problem in [("abc", "is not a number"), (1.7, "is not in [0, 1]"), (float("nan"), "not a finite number")]:
        path = tmp_path / "ckpt.pth"
        torch.save({"model": state, "meta": {"threshold": stored}}, path)
        code, err = detect([str(good), "--weights", str(path), "-o", str(tmp_path / "x.json")], capsys)
        assert code == 2 and f"{path}: stored threshold: " in err and problem in err and "Traceback" not in err


# process.py: the same protections, its own option names -------------------------------------------


def test_process_refuses_absurd_images_and_runs_the_next(tmp_path, good, random_weights, monkeypatch, capsys):
    inp, out = tmp_path / "input", tmp_path / "output"
    inp.mkdir()
    write_tiff(inp / "a_huge.tiff", 200_000, 200_000, tile=512)
    tifffile.imwrite(inp / "b_nores.tiff", RGB, photometric="rgb")
    (inp / "c_good.tiff").write_bytes(good.read_bytes())
    started = time.monotonic()
    code = process.main(["--input", str(inp), "--output", str(out), "--weights", str(random_weights), "--device", "cpu"])
    assert time.monotonic() - started < 60
    err = capsys.readouterr().err
    cases = {c["filename"]: c for c in json.loads((out / "results.json").read_text())}
    assert code == 1 and cases["c_good.tiff"]["error"] is None
    assert "MIDOG_MAX_MEGAPIXELS" in cases["a_huge.tiff"]["error"]
    assert "no resolution tags" in cases["b_nores.tiff"]["error"] and "--mpp" not in err and "Traceback" not in err
    monkeypatch.setenv("MIDOG_MAX_MEGAPIXELS", "50000")
    monkeypatch.setenv("MIDOG_TIME_BUDGET", "1e-9")
    code = process.main(["--input", str(inp), "--output", str(out), "--weights", str(random_weights), "--device", "cpu"])
    cases = {c["filename"]: c for c in json.loads((out / "results.json").read_text())}
    assert code == 1 and "over its time budget" in cases["c_good.tiff"]["error"]


@pytest.mark.parametrize("name, value", [("MIDOG_THRESHOLD", "2"), ("MIDOG_THRESHOLD", "nan"), ("MIDOG_TIME_BUDGET", "-5"), ("MIDOG_MAX_CHUNK_MB", "lots")])
def test_process_env_values_are_checked(name, value, tmp_path, random_weights, monkeypatch, capsys):
    monkeypatch.setenv(name, value)
    (tmp_path / "in").mkdir()
    code = process.main(["--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"), "--weights", str(random_weights)])
    assert code == 2 and f"{name}=" in capsys.readouterr().err


# 9: training data is checked before training ---------------------------------------------------------


def test_train_with_a_wrong_image_folder_fails_before_training(tmp_path, capsys):
    from midog.synth import make_dataset

    make_dataset(tmp_path / "set", seed=1, images_per_scanner=2, size=(320, 320))
    annotations = tmp_path / "set" / "MIDOG.json"
    n = len(json.loads(annotations.read_text())["images"])
    empty = tmp_path / "elsewhere"
    empty.mkdir()
    started = time.monotonic()
    code = main(["train", str(annotations), "--images", str(empty), "--out", str(tmp_path / "run"), "--backbone", "none", "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2 and f"{n} of {n} images not found under {empty}; first: " in err
    assert time.monotonic() - started < 30 and not (tmp_path / "run" / "last.pt").exists()
    first = sorted(json.loads(annotations.read_text())["images"], key=lambda i: i["id"])[0]["file_name"]
    tifffile.imwrite(tmp_path / "set" / first, RGB[:100, :100], photometric="rgb", **CM)  # wrong size
    split = tmp_path / "split.txt"
    split.write_text("train/\n  " + "\n  ".join(i["file_name"] for i in json.loads(annotations.read_text())["images"]) + "\n  ghost.tiff\n")
    code = main(["train", str(annotations), "--split", str(split), "--out", str(tmp_path / "run"), "--backbone", "none", "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2 and f"{first} is 100 x 100 px, the annotations say 320 x 320" in err
    assert "split file are not in the annotations" in err and "ghost.tiff" in err


def test_other_readers_get_the_same_spacing_and_range_rules(tmp_path, monkeypatch):
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(RGB[:64, :64], isVector=True)
    image.SetSpacing((0.00025, 0.25))  # ITK headers store mm: y is 1000x x
    sitk.WriteImage(image, str(tmp_path / "aniso.mha"))
    with pytest.raises(ImageError, match="y spacing 250 um/px \\(from the image header\\)"):
        open_slide(tmp_path / "aniso.mha")
    grey12 = (RGB[:64, :64, 0].astype(np.uint16) << 4)  # 12-bit data in a 16-bit PNG
    sitk.WriteImage(sitk.GetImageFromArray(grey12), str(tmp_path / "grey12.png"))
    with open_slide(tmp_path / "grey12.png", mpp=0.25) as s:
        assert (s.read_region(0, 0, 64, 64)[..., 0] == RGB[:64, :64, 0]).all()

    import openslide

    class FakeSlide:  # a vendor slide whose MPP properties disagree between the axes
        dimensions = (1000, 1000)
        properties = {openslide.PROPERTY_NAME_MPP_X: "0.25", openslide.PROPERTY_NAME_MPP_Y: "25"}

        def __init__(self, path: str) -> None:
            pass

    monkeypatch.setattr(openslide, "OpenSlide", FakeSlide)
    from midog.slides.wsi import OpenSlideSlide
    from midog.slides.spacing import decide_spacing

    # The reader reports what the slide says; open_slide's one rule checks it.
    fake = tmp_path / "fake.svs"
    with pytest.raises(ImageError, match="more than 2% apart"):
        decide_spacing(fake, None, OpenSlideSlide(fake).file_spacing)
    FakeSlide.properties = {openslide.PROPERTY_NAME_MPP_X: "nan"}
    with pytest.raises(ImageError, match="x pixel spacing nan"):
        decide_spacing(fake, None, OpenSlideSlide(fake).file_spacing)
    assert decide_spacing(fake, 0.25, OpenSlideSlide(fake).file_spacing) == (0.00025, 0.00025)  # the override wins


def test_read_only_output_folder_is_refused_before_any_work(tmp_path, good, random_weights, capsys, monkeypatch):
    import tempfile

    import midog.detector.core

    def denied(*args, **kwargs):  # what a read-only folder answers (tests may run as root)
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(midog.detector.core.Detector, "from_weights", None)
    monkeypatch.setattr(tempfile, "TemporaryFile", denied)
    code, err = detect([str(good), "--weights", str(random_weights), "-o", str(tmp_path / "ro" / "out.json")], capsys)
    assert code == 2 and f"cannot write outputs to {tmp_path / 'ro'}: Permission denied" in err and "Traceback" not in err
