"""Streaming: region reads equal the whole-image path; a slide larger than the memory cap
is processed tile by tile with the same points; tissue detection skips only glass."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from conftest import VECTOR_NAMES

import midog.slides.readers
from midog.detector import Detector
from midog.results.challenge import multiple_points
from midog.slides.readers import TiffSlide, open_slide
from midog.slides.wsi import OpenSlideSlide
from midog.synth import make_slide


@pytest.mark.parametrize("name", VECTOR_NAMES)
def test_tiff_regions_equal_simpleitk_pixels(name, vectors_dir):
    import SimpleITK as sitk

    path = vectors_dir / f"{name}.tiff"
    whole = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
    with open_slide(path) as slide:
        assert isinstance(slide, TiffSlide)
        assert slide.spacing_mm[0] == sitk.ReadImage(str(path)).GetSpacing()[0]
        for x, y, w, h in [(0, 0, 512, 512), (slide.width - 512, slide.height - 512, 512, 512), (37, 101, 300, 77)]:
            assert np.array_equal(slide.read_region(x, y, w, h), whole[y : y + h, x : x + w])


def test_streamed_detections_equal_whole_image_detections(vectors_dir, vector_weights, monkeypatch):
    path = vectors_dir / "synthA_1400x1000.tiff"
    streamed = Detector.from_weights(vector_weights, "cpu", workers=2).detect(path)
    monkeypatch.setattr(midog.slides.readers, "_is_tiff", lambda p: False)  # force SimpleITK, whole image
    with open_slide(path) as slide:
        assert isinstance(slide, midog.slides.slide.ArraySlide)
    whole = Detector.from_weights(vector_weights, "cpu", workers=0).detect(path)
    assert np.array_equal(streamed.boxes, whole.boxes) and np.array_equal(streamed.scores, whole.scores)


@pytest.fixture(scope="module")
def big_slide(tmp_path_factory):
    """24576^2 RGB = 1.8 GB if loaded whole; one 1024 px tissue region on glass."""
    path = tmp_path_factory.mktemp("slide") / "slide.tiff"
    regions = make_slide(path, 24576, 24576, seed=3, n_regions=1, region_size=1024)
    return path, regions


def test_tissue_detection_keeps_tissue_tiles_only(big_slide, random_weights):
    path, [(rx, ry, rs)] = big_slide
    detector = Detector.from_weights(random_weights, "cpu")
    with open_slide(path) as slide:
        assert slide.is_whole_slide
        kept, skipped = detector.tiles_to_run(slide, None)
    assert skipped > 2000 and 4 <= len(kept) <= 25
    for x, y in kept:  # each kept tile is within one tile of the tissue
        assert rx - 512 - 460 <= x <= rx + rs + 460 and ry - 512 - 460 <= y <= ry + rs + 460
    inner = [(x, y) for x, y in kept if rx <= x and x + 512 <= rx + rs and ry <= y and y + 512 <= ry + rs]
    assert inner, "tiles fully inside the tissue must be kept"


def test_openslide_reads_the_same_slide(big_slide):
    path, [(rx, ry, _)] = big_slide
    with TiffSlide(path) as a, OpenSlideSlide(path) as b:
        assert (a.width, a.height) == (b.width, b.height)
        assert a.file_spacing().spacing_mm == pytest.approx(b.file_spacing().spacing_mm, rel=1e-9)
        ra, rb = a.read_region(rx, ry, 300, 200).astype(int), b.read_region(rx, ry, 300, 200).astype(int)
        assert np.abs(ra - rb).max() <= 2  # two JPEG decoders may round differently


CHILD = textwrap.dedent(
    """
    import json, resource, sys
    import numpy as np
    from midog.detector import Detector
    from midog.results.challenge import multiple_points

    slide, weights, slide_bytes = sys.argv[1], sys.argv[2], int(sys.argv[3])
    detector = Detector.from_weights(weights, "cpu")
    vm = int(open("/proc/self/status").read().split("VmSize:")[1].split()[0]) * 1024
    cap = vm + 1024**3  # 1 GiB above what the loaded model uses: less than the slide
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    try:
        np.ones(slide_bytes, np.uint8)
        raise SystemExit("the cap does not bite: the whole slide would fit")
    except MemoryError:
        pass
    print(json.dumps(multiple_points(detector.detect(slide), "2022")))
    """
)


def test_slide_bigger_than_memory_cap_gives_same_points(big_slide, vector_weights):
    path, _ = big_slide
    slide_bytes = 24576 * 24576 * 3
    env = {**os.environ, "MALLOC_ARENA_MAX": "2", "OMP_NUM_THREADS": "2"}
    run = subprocess.run(
        [sys.executable, "-c", CHILD, str(path), str(vector_weights), str(slide_bytes)],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    capped = json.loads(run.stdout)
    detector = Detector.from_weights(vector_weights, "cpu")
    free = json.loads(json.dumps(multiple_points(detector.detect(path), "2022")))
    assert capped == free and len(free["points"]) > 0
