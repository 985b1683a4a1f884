"""`midog review`: the pages and pictures it writes, its counts against `midog count`, and the
page itself in a real browser (headless Chromium over the DevTools Protocol): every candidate
drawn, the slider recounting as `midog count` does, no console error, no network request.

The browser test keeps one screenshot per run in tests/artefacts/ (not committed) to look at.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from test_count import crafted_points, write_image

from midog.commands.cli import main
from midog.results.reader import at_threshold
from midog.results.review import SLIDER_THRESHOLDS, page_names
from midog.results.review_tiles import pyramid_levels, tiles_to_write

ARTEFACTS = Path(__file__).resolve().parent / "artefacts"


def result_2022(seed: int = 1) -> dict:
    """Crafted points (a cluster, look-alikes, scattered, on glass) with spread probabilities,
    named at the detector's operating point."""
    rng = np.random.default_rng(seed)
    points = []
    for _, xy in crafted_points(rng).items():
        for x, y in xy:
            p = float(rng.uniform(0.3, 1.0))
            points.append({"point": [float(x), float(y), 0], "probability": p, "name": "mitotic figure" if p > 0.64 else "non-mitotic figure"})
    return {"type": "Multiple points", "points": points, "version": {"major": 1, "minor": 0}}


def page_data(page: Path) -> dict:
    text = page.read_text()
    return json.loads(re.search(r'<script type="application/json" id="review-data">(.*?)</script>', text, re.S).group(1))


@pytest.fixture(scope="module")
def reviewed(tmp_path_factory) -> tuple[Path, Path, Path]:
    """(result, image, output folder) of `midog review` on one crafted region."""
    folder = tmp_path_factory.mktemp("review")
    image = write_image(folder / "region.tiff")
    result = folder / "region.json"
    result.write_text(json.dumps(result_2022()))
    assert main(["review", str(result), "--image", str(image), "-o", str(folder / "out"), "--quiet"]) == 0
    return result, image, folder / "out"


def count_at(result: Path, image: Path, threshold: float, folder: Path) -> dict:
    """What `midog count --threshold` says, checked against `midog count` of the result renamed
    at that threshold (what the option means)."""
    out = folder / f"at-{threshold}.count.json"
    assert main(["count", str(result), "--image", str(image), "--threshold", str(threshold), "-o", str(out)]) == 0
    data = json.loads(result.read_text())
    for p in data["points"]:
        p["name"] = "mitotic figure" if p["probability"] > threshold else "non-mitotic figure"
    renamed = folder / f"renamed-{threshold}.json"
    renamed.write_text(json.dumps(data))
    assert main(["count", str(renamed), "--image", str(image), "-o", str(folder / "renamed.count.json")]) == 0
    counted = json.loads(out.read_text())
    assert counted["threshold"] == threshold
    assert {k: v for k, v in counted.items() if k != "threshold"} == {k: v for k, v in json.loads((folder / "renamed.count.json").read_text()).items() if k != "threshold"}
    return counted


def test_pyramid_levels():
    levels = pyramid_levels(2000, 1212)
    assert [lv.downsample for lv in levels] == [8, 4, 2, 1]
    assert (levels[0].cols, levels[0].rows) == (1, 1) and (levels[-1].width, levels[-1].height) == (2000, 1212)
    assert (levels[-1].cols, levels[-1].rows) == (8, 5)
    assert [lv.downsample for lv in pyramid_levels(100, 80)] == [1]


def test_tiles_far_from_tissue_are_not_written():
    levels = pyramid_levels(256 * 16, 256 * 16)
    keep = np.zeros((64, 64), bool)  # cells of 64 px
    keep[10:12, 20:22] = True  # 128 px of tissue at x 1280..1408, y 640..768
    wanted = tiles_to_write(levels, keep, 64.0)
    assert wanted[0].all() and wanted[2].all()  # 1 and 16 tiles: small levels whole
    assert np.argwhere(wanted[-1]).tolist() == [[2, 5]]


def test_page_and_pictures(reviewed, tmp_path):
    result, image, out = reviewed
    data = page_data(out / "region.html")
    n = len(json.loads(result.read_text())["points"])
    assert len(data["points"]["x"]) == n and data["thresholds"] == list(SLIDER_THRESHOLDS)
    # Every tile the page may ask for exists, and no other.
    written = {p.relative_to(out).as_posix() for p in (out / "region_files" / "tiles").rglob("*.jpg")}
    expected = set()
    for k, level in enumerate(data["levels"]):
        for r in range(level["rows"]):
            for c in range(level["cols"]):
                if level["have"] is None or level["have"][r * level["cols"] + c] == "1":
                    expected.add(f"region_files/tiles/{k}/{c}_{r}.jpg")
    assert written == expected and len(written) == sum(lv["cols"] * lv["rows"] for lv in data["levels"])  # a region: every tile
    assert all((out / g["src"]).is_file() for g in data["gallery"]) and len(data["gallery"]) == n
    probabilities = [data["points"]["p"][g["i"]] for g in data["gallery"]]
    assert probabilities == sorted(probabilities, reverse=True)
    assert data["thresholds"][data["start"]] == 0.64
    # The count table at two thresholds is what `midog count` gives there.
    for t in (0.64, 0.9):
        expected = count_at(result, image, t, tmp_path)
        entry = data["counts"][SLIDER_THRESHOLDS.index(t)]
        assert entry["figures"] == expected["mitotic_figures"] > 0
        assert entry["hotspot"]["count"] == expected["hotspot"]["count"] and entry["score"] == expected["score"]
    index = (out / "index.html").read_text()
    assert "region.html" in index and "region_files/thumb.jpg" in index


def test_2021_result_keeps_its_names(tmp_path):
    image = write_image(tmp_path / "region.tiff")
    xy = crafted_points(np.random.default_rng(2))["cluster"]
    result = tmp_path / "old.json"
    result.write_text(json.dumps({"type": "Multiple points", "points": [{"point": [float(x), float(y), 0]} for x, y in xy], "version": {"major": 1, "minor": 0}}))
    assert main(["review", str(result), "--image", str(image), "-o", str(tmp_path / "out"), "--quiet"]) == 0
    data = page_data(tmp_path / "out" / "old.html")
    assert data["thresholds"] == [None] and data["points"]["p"] is None and data["counts"][0]["figures"] == len(xy)
    from midog.results.reader import read_result

    with pytest.raises(Exception, match="no probability"):
        at_threshold(read_result(result, (0.001, 0.001)), 0.5, result)


def test_one_bad_image_keeps_the_others(reviewed, tmp_path, capsys):
    result, image, _ = reviewed
    broken = tmp_path / "broken.tiff"
    broken.write_bytes(b"not a tiff at all")
    out = tmp_path / "out"
    status = main(["review", str(result), str(result), "--image", str(broken), str(image), "-o", str(out), "--quiet"])
    assert status == 1
    assert "broken.tiff" in capsys.readouterr().err
    assert (out / "region-2.html").is_file() and not (out / "region.html").exists()
    assert page_names([Path("a/x.json"), Path("b/x.json"), Path("index.json")]) == ["x", "x-2", "index-2"]
    rows = json.loads(re.search(r'id="cohort-data">(.*?)</script>', (out / "index.html").read_text(), re.S).group(1))
    assert [r["error"] is None for r in rows] == [False, True] and "broken.tiff" in rows[0]["error"]


def test_mismatched_images_are_refused(reviewed, capsys):
    result, image, out = reviewed
    assert main(["review", str(result), str(result), "--image", str(image), "-o", str(out)]) == 2
    assert "one image per result" in capsys.readouterr().err


def test_whole_slide_pyramid(tmp_path):
    """A pyramidal slide: coarse tiles come from its own levels; glass is not tiled finely."""
    from midog.results.review_tiles import Level, read_tile
    from midog.slides.readers import open_slide
    from midog.synth import make_slide

    path = tmp_path / "slide.tiff"
    (ax, ay, size), _ = make_slide(path, 8192, 6144, seed=1, n_regions=2, region_size=1024, levels=3)
    with open_slide(path) as slide:
        assert len(slide.level_downsamples) == 3
        coarse = read_tile(slide, Level(32, 256, 192, 1, 1), 0, 0)
        whole = slide.read_region(0, 0, 8192, 6144)[::32, ::32]
        assert coarse.shape == (192, 256, 3)
        assert np.abs(coarse.astype(int).mean((0, 1)) - whole.astype(int).mean((0, 1))).max() < 6
    xy = (np.array([[ax + 500.0, ay + 500.0]]) * slide.spacing_mm).tolist()
    result = tmp_path / "slide.json"
    result.write_text(json.dumps({"type": "Multiple points", "points": [{"point": [x, y, 0], "probability": 0.9, "name": "mitotic figure"} for x, y in xy], "version": {"major": 1, "minor": 0}}))
    assert main(["review", str(result), "--image", str(path), "-o", str(tmp_path / "out"), "--quiet", "--area-mm2", "0.05"]) == 0
    data = page_data(tmp_path / "out" / "slide.html")
    finest = data["levels"][-1]
    assert finest["have"] is not None
    share = finest["have"].count("1") / len(finest["have"])
    tissue_share = 2 * size * size / (8192 * 6144)
    assert tissue_share < share < 4 * tissue_share  # tissue and a margin, not the glass
    assert data["counts"][data["start"]]["figures"] == 1




def test_page_in_a_browser(reviewed, chromium, tmp_path):
    from browser import Browser

    result, image, out = reviewed
    n = len(json.loads(result.read_text())["points"])
    browser = Browser(chromium, tmp_path / "profile")
    try:
        browser.open(out / "region.html")
        assert browser.evaluate("document.querySelectorAll('#points circle').length") == n
        assert browser.evaluate("document.querySelectorAll('#gallery figure').length") == n
        assert browser.evaluate("document.querySelectorAll('#tiles-base img').length") >= 1
        assert browser.evaluate("document.querySelector('#overlay .hotspot').getAttribute('rx') !== null")
        for t in (0.9, 0.45):
            k = SLIDER_THRESHOLDS.index(t)
            shown = browser.evaluate(
                f"(() => {{ const s = document.getElementById('threshold'); s.value = {k};"
                " s.dispatchEvent(new Event('input')); return +document.getElementById('count-figures').textContent; })()"
            )
            expected = count_at(result, image, t, tmp_path)
            assert shown == expected["mitotic_figures"]
            assert browser.evaluate("+document.getElementById('count-hotspot').textContent") == expected["hotspot"]["count"]
            assert browser.evaluate("document.querySelectorAll('#points circle.m').length") == sum(
                p["probability"] > t for p in json.loads(result.read_text())["points"]
            )
        # Zoom in on the best candidate from the gallery: finer tiles load, all of them exist.
        browser.evaluate("document.querySelector('#gallery figure').click()")
        browser.wait_for("document.querySelectorAll('#tiles-fine img').length > 0 && Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)")
        browser.evaluate("document.getElementById('zoom-fit').click()")
        browser.wait_for("Array.from(document.images).every(i => i.complete)")
        browser.screenshot(ARTEFACTS / "review-page.png")
        browser.open(out / "index.html", ready="document.querySelectorAll('#cohort tbody tr').length > 0")
        assert browser.evaluate("document.querySelectorAll('#cohort tbody tr').length") == 1
        browser.evaluate("document.querySelector('#cohort th[data-key=figures]').click()")
        browser.evaluate("0")  # collect the events the clicks caused
        assert browser.problems() == []
        urls = browser.requested_urls()
        assert urls and all(u.startswith(("file://", "data:")) for u in urls), [u for u in urls if not u.startswith("file:")]
    finally:
        browser.close()


def test_detect_review_writes_pages_and_index(random_weights, tmp_path):
    image = write_image(tmp_path / "region.tiff", (600, 500))
    out = tmp_path / "run" / "region.json"
    args = ["detect", str(image), "--weights", str(random_weights), "-o", str(out), "--device", "cpu", "--no-progress"]
    assert main([*args, "--style", "2022", "--threshold", "0.01", "--review", "--area-mm2", "0.05"]) == 0
    data = page_data(out.parent / "review" / "region.html")
    n = len(json.loads(out.read_text())["points"])
    assert n > 0 and len(data["points"]["x"]) == n
    assert data["thresholds"][data["start"]] == 0.01  # the detector's operating point, from the sidecar
    assert data["hotspot"]["area_mm2"] == 0.05
    rows = json.loads(re.search(r'id="cohort-data">(.*?)</script>', (out.parent / "review" / "index.html").read_text(), re.S).group(1))
    assert [r["name"] for r in rows] == ["region"] and rows[0]["figures"] == data["counts"][data["start"]]["figures"]
    # `midog review out/*.json`: the sidecar beside the result is no result of its own.
    listed = sorted(str(p) for p in out.parent.glob("*.json"))
    assert len(listed) == 2
    assert main(["review", *listed, "--image", str(image), "-o", str(tmp_path / "again"), "--quiet", "--area-mm2", "0.05"]) == 0
    assert page_data(tmp_path / "again" / "region.html")["counts"] == data["counts"]
