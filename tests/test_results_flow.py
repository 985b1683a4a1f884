"""One result object, many writers: `midog detect --export ... --count` opens each image
once, writes its extras from the detections it already holds, and they are the bytes that
`midog export` / `midog count` make later from the JSON file alone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import ROOT, VECTORS, need_shared

import midog.slides.readers as readers
from midog.commands.cli import main

DEMO = ROOT / "weights" / "demo-synthetic.pth"
EXPORTS = {"geojson": ".geojson", "asap": ".xml", "csv": ".csv"}


@pytest.fixture()
def opened(monkeypatch):
    """Every image path `open_slide` is called with, in order."""
    calls: list[Path] = []
    real = readers.open_slide

    def counting(path, *args, **kwargs):
        calls.append(Path(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(readers, "open_slide", counting)
    return calls


@pytest.fixture(scope="module")
def slide(tmp_path_factory) -> Path:
    from midog.synth import make_slide

    path = tmp_path_factory.mktemp("slide") / "slide.tiff"
    make_slide(path, 2048, 1536, seed=3, n_regions=1, region_size=768, levels=2)
    return path


def detect_with_extras(images: list[Path], out: Path, style: str) -> None:
    extras = [a for fmt in EXPORTS for a in ("--export", fmt)]
    args = [*map(str, images), "--weights", str(DEMO), "--style", style, "-o", f"{out}/", *extras, "--count", "--overlay", "--no-progress"]
    assert main(["detect", *args]) == 0


@pytest.mark.parametrize("style", ["2021", "2022"])
def test_detect_opens_each_image_once_and_its_extras_equal_the_later_commands(tmp_path, slide, opened, style):
    images = [need_shared(VECTORS / "synthC_512x512.tiff"), slide]
    detect_with_extras(images, tmp_path, style)
    assert opened == images  # once each: exports and count came from the detections
    for image in images:
        result = tmp_path / f"{image.stem}.json"
        if style == "2022":  # candidates on both images: the comparisons below compare points
            assert json.loads(result.read_text())["points"], image
        for fmt, suffix in EXPORTS.items():
            later = tmp_path / f"later{suffix}"
            assert main(["export", str(result), "--image", str(image), "--format", fmt, "-o", str(later)]) == 0
            assert later.read_bytes() == result.with_suffix(suffix).read_bytes(), (image.name, fmt)
        recount = tmp_path / "later.count.json"
        assert main(["count", str(result), "--image", str(image), "-o", str(recount)]) == 0
        assert recount.read_bytes() == (tmp_path / f"{image.stem}.count.json").read_bytes()
        assert (tmp_path / f"{image.stem}.overlay.png").stat().st_size > 0


def test_detections_carry_what_later_steps_need(slide):
    from midog import Detector
    from midog.results.count import THUMBNAIL_SIDE

    found = Detector.from_weights(DEMO, device="cpu").detect(slide, thumbnail_side=THUMBNAIL_SIDE)
    with readers.open_slide(slide) as s:
        spacing = s.spacing_mm
    assert found.image == slide and found.image_size == (2048, 1536)
    assert found.offset_px == (0, 0) and found.spacing_mm == spacing
    assert found.thumbnail is not None and max(found.thumbnail.pixels.shape[:2]) <= THUMBNAIL_SIDE
    assert found.thumbnail.downsample == pytest.approx(2048 / found.thumbnail.pixels.shape[1])
    # what a 2021 file records of them, and what reading it back gives: the same points
    from midog.results.challenge import as_written, multiple_points

    written = as_written(found, "2021")
    assert multiple_points(written, "2021") == multiple_points(found, "2021")
    assert written.class_names == ["mitotic figure"] * len(written) and len(written) == int(found.mitotic.sum())
