"""Synthetic MIDOG-layout data: file layout, label formats, spacing, determinism, domains."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from midog import synth
from midog.errors import MidogError

N = 2  # images per scanner
W, H = 512, 384  # width, height: not square, so that swapped axes would show
FILES = ["MIDOG.json", "unlabeled_annotations.json", "ground_truth.json", "domains.json", "scanners.json"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("synth")
    summary = synth.make_dataset(out, seed=3, images_per_scanner=N, size=(W, H), workers=2)
    return out, summary


def _load(out: Path, name: str):
    return json.loads((out / name).read_text())


def _all_annotations(out: Path) -> list[dict]:
    return _load(out, "MIDOG.json")["annotations"] + _load(out, "unlabeled_annotations.json")["annotations"]


def _hashes(out: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out.iterdir())}


def test_layout_and_summary(dataset):
    out, summary = dataset
    tiffs = sorted(p.name for p in out.glob("*.tiff"))
    assert tiffs == [f"{i:03d}.tiff" for i in range(1, 4 * N + 1)]
    for name in FILES:
        assert (out / name).is_file()
    assert summary["counts"]["images"] == 4 * N
    assert [Path(p).name for p in summary["images"]] == tiffs
    assert list(summary["scanners"]) == [s.name for s in synth.SCANNERS]
    anns = _all_annotations(out)
    assert summary["counts"]["mitotic figure"] == sum(a["category_id"] == 1 for a in anns)
    assert summary["counts"]["not mitotic figure"] == sum(a["category_id"] == 2 for a in anns)


def test_scanners_and_domains(dataset):
    out, _ = dataset
    sc = _load(out, "scanners.json")
    names = [s.name for s in synth.SCANNERS]
    assert sc["scanners"] == names and len(names) == 4
    assert sc["unlabeled"] == names[-1] == synth.UNLABELED_SCANNER
    # Contiguous id ranges per scanner, as in MIDOG 2021.
    assert sc["id_ranges"] == {n: [k * N + 1, (k + 1) * N] for k, n in enumerate(names)}
    domains = _load(out, "domains.json")
    for k, n in enumerate(names):
        for i in range(k * N + 1, (k + 1) * N + 1):
            assert domains[f"{i:03d}.tiff"] == n
    spacings = [s.spacing_um for s in synth.SCANNERS]
    assert len(set(spacings)) == 4 and all(0.22 <= s <= 0.26 for s in spacings)


def test_midog_json_structure(dataset):
    out, _ = dataset
    real_keys = {"info", "licenses", "images", "categories", "annotations"}
    doc = _load(out, "MIDOG.json")
    assert set(doc) == real_keys
    assert doc["categories"] == [{"id": 1, "name": "mitotic figure"}, {"id": 2, "name": "not mitotic figure"}]
    assert [im["id"] for im in doc["images"]] == list(range(1, 4 * N + 1))
    for im in doc["images"]:
        assert im["file_name"] == f"{im['id']:03d}.tiff"
        assert (im["width"], im["height"]) == (W, H)
    unl = _load(out, "unlabeled_annotations.json")
    assert set(unl) == real_keys
    d_first, d_last = _load(out, "scanners.json")["id_ranges"][synth.UNLABELED_SCANNER]
    # The unlabeled scanner's labels are held back from MIDOG.json, like the GT450's.
    assert all(a["image_id"] < d_first for a in doc["annotations"])
    assert unl["annotations"] and all(d_first <= a["image_id"] <= d_last for a in unl["annotations"])
    assert [im["id"] for im in unl["images"]] == list(range(d_first, d_last + 1))

    anns = doc["annotations"] + unl["annotations"]
    assert len({a["id"] for a in anns}) == len(anns)
    for a in anns:
        assert set(a) == {"bbox", "category_id", "image_id", "id"}
        x1, y1, x2, y2 = a["bbox"]
        assert all(isinstance(v, int) for v in a["bbox"])
        assert (x2 - x1, y2 - y1) == (50, 50)
        assert a["category_id"] in (1, 2)
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        assert 30 <= cx <= W - 30 and 30 <= cy <= H - 30
    # Every labelled scanner has both categories, and objects do not overlap.
    for img_id in range(1, 4 * N + 1):
        boxes = [a["bbox"] for a in anns if a["image_id"] == img_id]
        for i, b in enumerate(boxes):
            for c in boxes[i + 1 :]:
                assert b[2] <= c[0] or c[2] <= b[0] or b[3] <= c[1] or c[3] <= b[1]
    for k in range(4):
        ids = range(k * N + 1, (k + 1) * N + 1)
        cats = {a["category_id"] for a in anns if a["image_id"] in ids}
        assert cats == {1, 2}


def test_tiffs_read_by_simpleitk_with_spacing(dataset):
    sitk = pytest.importorskip("SimpleITK")
    out, _ = dataset
    domains = _load(out, "domains.json")
    by_name = {s.name: s for s in synth.SCANNERS}
    for name, scanner_name in domains.items():
        img = sitk.ReadImage(str(out / name))
        arr = sitk.GetArrayFromImage(img)
        assert arr.shape == (H, W, 3) and arr.dtype == np.uint8
        expected = by_name[scanner_name].spacing_mm
        assert img.GetSpacing() == pytest.approx((expected, expected), rel=1e-9)


def test_tiff_tags(dataset):
    tifffile = pytest.importorskip("tifffile")
    out, _ = dataset
    with tifffile.TiffFile(out / "001.tiff") as tif:
        page = tif.pages[0]
        assert page.photometric == tifffile.PHOTOMETRIC.RGB
        assert page.compression == tifffile.COMPRESSION.ADOBE_DEFLATE
        assert page.tags["ResolutionUnit"].value in (tifffile.RESUNIT.INCH, tifffile.RESUNIT.CENTIMETER)


def test_ground_truth_mm(dataset):
    out, _ = dataset
    gt = _load(out, "ground_truth.json")
    domains = _load(out, "domains.json")
    assert sorted(gt) == sorted(domains)
    spacing = _load(out, "scanners.json")["spacing_mm"]
    assert spacing == {s.name: s.spacing_mm for s in synth.SCANNERS}
    names = {im["id"]: im["file_name"] for im in _load(out, "MIDOG.json")["images"]}
    expected: dict[str, list] = {n: [] for n in names.values()}
    for a in _all_annotations(out):
        if a["category_id"] != 1:
            continue
        fn = names[a["image_id"]]
        sp = spacing[domains[fn]]
        cx, cy = (a["bbox"][0] + a["bbox"][2]) / 2, (a["bbox"][1] + a["bbox"][3]) / 2
        expected[fn].append([cx * sp, cy * sp, 0])
    for fn, pts in gt.items():
        assert len(pts) == len(expected[fn])
        if pts:
            np.testing.assert_allclose(sorted(pts), sorted(expected[fn]), rtol=1e-12, atol=0)
    # All four scanners have ground truth, the unlabeled one included.
    per_scanner = {n: 0 for n in spacing}
    for fn, pts in gt.items():
        per_scanner[domains[fn]] += len(pts)
    assert all(v > 0 for v in per_scanner.values())


def test_deterministic(dataset, tmp_path):
    out, _ = dataset
    again = tmp_path / "again"
    # Threads or not, the bytes are the same: each image has its own random stream.
    synth.make_dataset(again, seed=3, images_per_scanner=N, size=(W, H), workers=1)
    assert _hashes(again) == _hashes(out)
    # Another seed: other pixels and other labels (one scanner suffices to show it).
    other = tmp_path / "other"
    synth.make_dataset(other, seed=4, images_per_scanner=N, size=(W, H))
    h_out, h_other = _hashes(out), _hashes(other)
    for name in [f"{i:03d}.tiff" for i in range(1, 4 * N + 1)] + ["MIDOG.json", "ground_truth.json"]:
        assert h_out[name] != h_other[name]


def test_scanners_differ_in_colour(dataset):
    tifffile = pytest.importorskip("tifffile")
    out, _ = dataset
    means = []
    for k in range(4):
        imgs = [tifffile.imread(out / f"{i:03d}.tiff") for i in range(k * N + 1, (k + 1) * N + 1)]
        px = np.concatenate([im.reshape(-1, 3) for im in imgs]).astype(np.float64)
        # Tissue only: how much glass an image shows is content, not scanner.
        tissue = px.min(axis=1) < 215
        means.append(px[tissue].mean(axis=0))
    for i in range(4):
        for j in range(i + 1, 4):
            assert np.linalg.norm(means[i] - means[j]) > 5.0, (i, j, means[i], means[j])


def test_same_content_renders_differently_per_scanner():
    a, objs_a = synth.synth_image(0, 0, 256, 192, content_key=(7,))
    d, objs_d = synth.synth_image(0, 3, 256, 192, content_key=(7,))
    assert objs_a == objs_d  # content does not depend on the scanner
    assert np.abs(a.astype(int) - d.astype(int)).mean() > 5


def test_mitoses_are_dark(dataset):
    tifffile = pytest.importorskip("tifffile")
    out, _ = dataset
    by_id: dict[int, list[dict]] = {}
    for a in _all_annotations(out):
        by_id.setdefault(a["image_id"], []).append(a)
    n = 0
    for img_id, anns in by_id.items():
        img = tifffile.imread(out / f"{img_id:03d}.tiff").astype(np.float64).mean(axis=2)
        mean = img.mean()
        for a in anns:
            cx, cy = a["bbox"][0] + 25, a["bbox"][1] + 25
            core = img[cy - 12 : cy + 13, cx - 12 : cx + 13]
            if a["category_id"] == 1:
                # The darkest chromatin is far below the image mean, on every scanner.
                assert np.percentile(core, 5) < mean - 60, (img_id, a)
                n += 1
    assert n > 0


def test_mitoses_darker_than_lookalikes_on_average(dataset):
    tifffile = pytest.importorskip("tifffile")
    out, _ = dataset
    darkest = {1: [], 2: []}
    for a in _all_annotations(out):
        img = tifffile.imread(out / f"{a['image_id']:03d}.tiff").astype(np.float64).mean(axis=2)
        cx, cy = a["bbox"][0] + 25, a["bbox"][1] + 25
        darkest[a["category_id"]].append(img[cy - 12 : cy + 13, cx - 12 : cx + 13].min())
    assert np.mean(darkest[1]) < np.mean(darkest[2])


def test_invalid_arguments(tmp_path):
    with pytest.raises(MidogError):
        synth.make_dataset(tmp_path, images_per_scanner=0)
    with pytest.raises(MidogError):
        synth.make_dataset(tmp_path, size=(64, 64))
    with pytest.raises(MidogError):
        synth.make_dataset(tmp_path, seed=-1)


def test_cli(tmp_path, capsys):
    from midog.commands.cli import main

    assert main(["synth", str(tmp_path / "c"), "--seed", "1", "--images-per-scanner", "1", "--size", "160x128"]) == 0
    assert "wrote 4 images" in capsys.readouterr().out
    doc = _load(tmp_path / "c", "MIDOG.json")
    assert [(im["width"], im["height"]) for im in doc["images"]] == [(160, 128)] * 4
    with pytest.raises(SystemExit):
        main(["synth", str(tmp_path / "d"), "--size", "big"])


def test_synth_slide_writes_a_pyramidal_whole_slide_image(tmp_path, capsys):
    import tifffile

    from midog.commands.cli import main
    from midog.slides.readers import open_slide

    assert main(["synth", str(tmp_path), "--slide", "3000x2100", "--regions", "2", "--seed", "1"]) == 0
    path = tmp_path / "slide.tiff"
    assert "2 tissue regions" in capsys.readouterr().out
    with tifffile.TiffFile(path) as tif:
        pages = list(tif.pages)
        assert len(pages) == 2 and all(p.is_tiled and p.compression == tifffile.COMPRESSION.JPEG for p in pages)
        assert (pages[1].imagewidth, pages[1].imagelength) == (750, 525)  # level 1: down by 4
    with open_slide(path) as slide:
        assert (slide.width, slide.height) == (3000, 2100) and slide.is_whole_slide
        thumb, _ = slide.thumbnail(512)
        glass = (thumb.min(axis=2) > 230).mean()
        assert 0.3 < glass < 0.95, glass  # tissue regions on glass
    first = path.read_bytes()
    assert main(["synth", str(tmp_path), "--slide", "3000x2100", "--regions", "2", "--seed", "1"]) == 0
    assert path.read_bytes() == first  # same arguments, same bytes
