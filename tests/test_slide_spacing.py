"""Pixel spacing of vendor whole-slide files: the MPP that openslide reads from an Aperio
(SVS) description, the same description read by tiffslide when openslide cannot open the
file, and a clear error when a slide has no spacing or an implausible one."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from midog.errors import ImageError
from midog.slides.readers import TiffSlide, open_slide
from midog.slides.wsi import OpenSlideSlide

WIDTH, HEIGHT = 1024, 768


def aperio_file(path, mpp: str | None, tiled: bool = True):
    """A small file laid out as Aperio's scanners write it: the spacing only in the
    ImageDescription (`|MPP = ...`), no resolution tags."""
    desc = f"Aperio Image Library v12.0.15 \n{WIDTH}x{HEIGHT} [0,0 {WIDTH}x{HEIGHT}] (256x256) JPEG/RGB Q=70|AppMag = 40"
    if mpp is not None:
        desc += f"|MPP = {mpp}"
    pixels = np.random.default_rng(0).integers(0, 255, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    extra = {"tile": (256, 256)} if tiled else {}
    tifffile.imwrite(path, pixels, photometric="rgb", description=desc, metadata=None, compression="jpeg", **extra)
    with tifffile.TiffFile(path) as tif:  # the premise: no resolution tags to fall back on
        assert tif.pages[0].tags.get("ResolutionUnit").value == 1  # RESUNIT.NONE
    return path


@pytest.mark.parametrize("name", ["slide.svs", "slide.tiff"])
def test_aperio_spacing_through_openslide(tmp_path, name):
    # .svs by its suffix; .tiff because openslide recognises the vendor format inside.
    with open_slide(aperio_file(tmp_path / name, "0.2520")) as slide:
        assert isinstance(slide, OpenSlideSlide)
        assert slide.spacing_mm == pytest.approx((0.000252, 0.000252), rel=1e-12)
        assert (slide.width, slide.height) == (WIDTH, HEIGHT)
        assert slide.read_region(10, 20, 64, 32).shape == (32, 64, 3)


def test_aperio_description_read_by_tiffslide_when_openslide_cannot(tmp_path):
    # Strip-organised: openslide's Aperio reader needs tiles, tiffslide reads it anyway.
    with open_slide(aperio_file(tmp_path / "strips.tiff", "0.2520", tiled=False)) as slide:
        assert isinstance(slide, TiffSlide)
        assert slide.spacing_mm == pytest.approx((0.000252, 0.000252), rel=1e-12)


def test_slide_without_spacing_asks_for_mpp(tmp_path):
    path = aperio_file(tmp_path / "nompp.svs", None)
    with pytest.raises(ImageError) as err:
        open_slide(path)
    assert str(path) in str(err.value) and "--mpp" in str(err.value)
    with open_slide(path, mpp=0.25) as slide:
        assert slide.spacing_mm == (0.00025, 0.00025)


def test_implausible_slide_spacing_is_refused(tmp_path):
    path = aperio_file(tmp_path / "odd.svs", "352.8")  # e.g. a 72 dpi default in um
    with pytest.raises(ImageError, match="not a microscope resolution"):
        open_slide(path)
