"""The review mode of `midog review` pages in headless Chromium, with real key events: decide,
add a missed figure, reload, save the labels; the saved file is read by `midog evaluate
--ground-truth` and by training's data reader as it is. Also `midog labels merge`, and pages
of slides with hostile names (HTML and script in the name) showing the name as text.

Keeps a screenshot of the review mode in tests/artefacts/ (not committed) to look at.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile

from midog.commands.cli import main
from midog.evaluation.io import read_ground_truth
from midog.training.data import load_midog

ARTEFACTS = Path(__file__).resolve().parent / "artefacts"
SPACING_MM = 0.00025
SIZE = (1200, 900)


def write_region(path: Path, seed: int = 3) -> list:
    """A synthetic region (figures and look-alikes with known centres) as a TIFF; its objects."""
    from midog.synth.dataset import synth_image

    rgb, objects = synth_image(seed, 0, *SIZE)
    res = 10 / SPACING_MM  # pixels per cm
    tifffile.imwrite(path, rgb, photometric="rgb", resolution=(res, res), resolutionunit="CENTIMETER", tile=(256, 256))
    return objects


def points_result(xy_px: np.ndarray, scores: np.ndarray) -> dict:
    points = [{"point": [float(x) * SPACING_MM, float(y) * SPACING_MM, 0], "probability": float(p),
               "name": "mitotic figure" if p > 0.64 else "non-mitotic figure"} for (x, y), p in zip(xy_px, scores)]
    return {"type": "Multiple points", "points": points, "version": {"major": 1, "minor": 0}}


@pytest.fixture(scope="module")
def slide(tmp_path_factory) -> dict:
    """A reviewed synthetic region whose result misses one mitotic figure."""
    folder = tmp_path_factory.mktemp("review-mode")
    image = folder / "region.tiff"
    objects = write_region(image)
    figures = [o for o in objects if o.category_id == 1]
    missed = figures[1]
    kept = [o for o in objects if o is not missed]
    xy = np.array([[o.x, o.y] for o in kept], float)
    # Figures score high, look-alikes lower, in a fixed order: the first three offered are known.
    scores = np.array([0.95 - 0.01 * k if o.category_id == 1 else 0.6 - 0.01 * k for k, o in enumerate(kept)])
    result = folder / "region.json"
    result.write_text(json.dumps(points_result(xy, scores)))
    assert main(["review", str(result), "--image", str(image), "-o", str(folder / "out"), "--quiet", "--area-mm2", "0.02"]) == 0
    return {"folder": folder, "image": image, "result": result, "xy": xy, "scores": scores, "missed": (missed.x, missed.y), "out": folder / "out"}




def client_xy(browser, x: float, y: float) -> tuple[float, float]:
    """Where the level-0 pixel (x, y) is on the page now."""
    return tuple(browser.evaluate(
        f"(() => {{ const V = window.midogViewer, b = V.viewer.getBoundingClientRect();"
        f" return [b.left + ({x} - V.view.x) * V.view.s, b.top + ({y} - V.view.y) * V.view.s]; }})()"))


def test_review_keys_reload_and_saved_labels(slide, chromium, tmp_path):
    from browser import Browser

    order = np.argsort(-slide["scores"], kind="stable")
    browser = Browser(chromium, tmp_path / "profile")
    downloads = tmp_path / "downloads"
    try:
        browser.allow_downloads(downloads)
        browser.open(slide["out"] / "region.html")
        offered = int((slide["scores"] >= 0.4).sum())
        assert browser.evaluate("document.getElementById('review-progress').textContent") == f"0 of {offered} decided, 0 added"
        for key in "jyjnju":
            browser.press(key)
        # j centred the view on each: the third candidate is in the middle of the viewer.
        cx, cy = client_xy(browser, *slide["xy"][order[2]])
        box = browser.evaluate("(() => { const b = document.getElementById('viewer').getBoundingClientRect(); return [b.left + b.width / 2, b.top + b.height / 2]; })()")
        assert abs(cx - box[0]) < 2 and abs(cy - box[1]) < 2
        browser.press("0")
        browser.press("a")
        browser.click(*client_xy(browser, *slide["missed"]))
        assert browser.evaluate("document.getElementById('review-progress').textContent") == f"3 of {offered} decided, 1 added"
        browser.press("?")
        assert browser.evaluate("!document.getElementById('review-help').hidden")
        browser.press("?")
        browser.reload()
        assert browser.evaluate("document.getElementById('review-progress').textContent") == f"3 of {offered} decided, 1 added"
        assert browser.evaluate("document.querySelectorAll('#marks path').length") == 4
        browser.press("J")  # the next undecided: the fourth best
        assert browser.evaluate("window.midogViewer.focused()") == int(order[3])
        assert browser.evaluate("window.midogViewer.view.s") == 1
        assert browser.evaluate("document.getElementById('magnification').textContent") == "≈ 40x"  # 0.25 µm per screen pixel
        browser.press("-")  # the whole region, every mark in view
        browser.wait_for("Array.from(document.images).every(i => i.complete)")
        browser.screenshot(ARTEFACTS / "review-mode.png")
        browser.press("s")
        deadline = time.monotonic() + 30
        target = downloads / "region.labels.json"
        while not target.is_file() and time.monotonic() < deadline:
            time.sleep(0.1)
        labels = json.loads(target.read_text())
        # The minimap: a click on it centres the view there.
        mx, my = browser.evaluate("(() => { const b = document.getElementById('minimap').getBoundingClientRect(); return [b.left + b.width / 4, b.top + b.height / 2]; })()")
        browser.click(mx, my)
        centre = browser.evaluate("(() => { const V = window.midogViewer; return [V.view.x + V.viewer.clientWidth / 2 / V.view.s, V.view.y + V.viewer.clientHeight / 2 / V.view.s]; })()")
        assert centre == pytest.approx([SIZE[0] / 4, SIZE[1] / 2], abs=8)
        assert browser.problems() == []
        assert all(u.startswith(("file://", "data:", "blob:")) for u in browser.requested_urls())
    finally:
        browser.close()

    xy = slide["xy"]
    centre = lambda e: ((e["bbox"][0] + e["bbox"][2]) / 2, (e["bbox"][1] + e["bbox"][3]) / 2)  # noqa: E731
    by_category = {c: [centre(a) for a in labels["annotations"] if a["category_id"] == c] for c in (1, 2)}
    assert labels["categories"] == [{"id": 1, "name": "mitotic figure"}, {"id": 2, "name": "not mitotic figure"}]
    assert labels["images"] == [{"id": 1, "file_name": "region.tiff", "width": SIZE[0], "height": SIZE[1], "spacing_mm": [SPACING_MM, SPACING_MM]}]
    assert all(a["bbox"][2] - a["bbox"][0] == 50 == a["bbox"][3] - a["bbox"][1] for a in labels["annotations"])
    added = by_category[1][1]
    assert by_category[1][0] == pytest.approx(tuple(xy[order[0]]), abs=0.051)  # y: the best
    assert np.hypot(added[0] - slide["missed"][0], added[1] - slide["missed"][1]) < 2  # a + click
    assert by_category[2] == [pytest.approx(tuple(xy[order[1]]), abs=0.051)]  # n: the second
    assert [centre(u) for u in labels["unsure"]] == [pytest.approx(tuple(xy[order[2]]), abs=0.051)]  # u: the third

    # `midog evaluate --ground-truth` takes the file as it is: the positives, in mm.
    truth = read_ground_truth(target)
    assert truth.points["region.tiff"][:, :2] == pytest.approx(np.array(by_category[1]) * SPACING_MM, abs=1e-9)
    predictions = tmp_path / "predictions"
    predictions.mkdir()
    (predictions / "region.json").write_text(slide["result"].read_text())
    assert main(["evaluate", "--predictions", str(predictions), "--ground-truth", str(target), "--output", str(tmp_path / "eval"), "--bootstrap", "0"]) == 0
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert "region.tiff" in json.dumps(metrics)
    # ... and so does training's data reader.
    record = load_midog(target, slide["folder"]).records[0]
    assert record.path == slide["image"] and record.labelled
    assert ((record.mitoses()[:, :2] + record.mitoses()[:, 2:]) / 2) == pytest.approx(np.array(by_category[1]))

    # Merged with another slide's labels: one file, ids renumbered, both images.
    other = json.loads(target.read_text())
    other["images"][0]["file_name"] = "other.tiff"
    (tmp_path / "other.labels.json").write_text(json.dumps(other))
    cohort = tmp_path / "cohort.json"
    assert main(["labels", "merge", str(target), str(tmp_path / "other.labels.json"), "-o", str(cohort)]) == 0
    merged = json.loads(cohort.read_text())
    assert [im["id"] for im in merged["images"]] == [1, 2] and len(merged["annotations"]) == 2 * len(labels["annotations"])
    assert [a["id"] for a in merged["annotations"]] == list(range(1, len(merged["annotations"]) + 1))
    assert set(read_ground_truth(cohort).points) == {"region.tiff", "other.tiff"}
    assert main(["labels", "merge", str(target), str(target), "-o", str(cohort)]) == 1  # one review per image


def test_decisions_are_kept_per_result(slide, chromium, tmp_path):
    """A page made again from the same result finds its decisions; one made from another
    result of the same image does not."""
    from browser import Browser

    folder = slide["folder"]
    again = tmp_path / "again"
    assert main(["review", str(slide["result"]), "--image", str(slide["image"]), "-o", str(again), "--quiet", "--area-mm2", "0.02"]) == 0
    changed = json.loads(slide["result"].read_text())
    changed["points"] = changed["points"][:-1]
    other = tmp_path / "region.json"
    other.write_text(json.dumps(changed))
    assert main(["review", str(other), "--image", str(slide["image"]), "-o", str(tmp_path / "other"), "--quiet", "--area-mm2", "0.02"]) == 0
    browser = Browser(chromium, tmp_path / "profile")
    try:
        browser.open(slide["out"] / "region.html")
        browser.press("j")
        browser.press("y")
        browser.open(again / "region.html")
        assert browser.evaluate("document.getElementById('review-progress').textContent").startswith("1 of ")
        browser.press("z")  # undo works on the regenerated page
        assert browser.evaluate("document.getElementById('review-progress').textContent").startswith("0 of ")
        browser.press("j")
        browser.press("y")
        browser.open(tmp_path / "other" / "region.html")
        assert browser.evaluate("document.getElementById('review-progress').textContent").startswith("0 of ")
        browser.open(slide["out"] / "index.html", ready="document.querySelectorAll('#cohort tbody tr').length > 0")
        assert browser.evaluate("document.querySelector('#cohort tbody tr td:last-child').textContent").startswith("1 of ")
        assert browser.evaluate("document.getElementById('cohort-size').textContent") == "(1 slide)"
        assert browser.problems() == []
    finally:
        browser.close()
    assert folder.is_dir()


def test_key_press_redraw_time_on_3000_candidates(slide, chromium, tmp_path):
    """How long a key press takes to the next painted frame on a 3000-candidate page,
    measured with the page's own clock; reported (tests/artefacts/review-key-times.json),
    asserted only loosely: the target is under 100 ms."""
    from browser import Browser

    rng = np.random.default_rng(7)
    xy = rng.uniform([0, 0], SIZE, (3000, 2))
    scores = rng.choice([0.3, 0.5, 0.7, 0.95], 3000)  # few distinct sets: the page is made in seconds
    result = tmp_path / "dense.json"
    result.write_text(json.dumps(points_result(xy, scores)))
    assert main(["review", str(result), "--image", str(slide["image"]), "-o", str(tmp_path / "out"), "--quiet", "--area-mm2", "0.02", "--gallery", "20"]) == 0
    browser = Browser(chromium, tmp_path / "profile")
    try:
        browser.open(tmp_path / "out" / "dense.html")
        assert browser.evaluate("document.querySelectorAll('#points circle').length") == 3000
        keys = ["j", "y", "j", "n", "j", "u", "J", "z", "k", "+", "-", "ArrowRight", "ArrowDown", "0", "j", "y"]
        for k, key in enumerate(keys):  # one at a time: each waits for the last one's frame
            browser.press(key)
            browser.wait_for(f"window.midogKeyTimes.length > {k}")
        times = browser.evaluate("window.midogKeyTimes")
        assert browser.problems() == []
    finally:
        browser.close()
    ms = sorted(t["ms"] for t in times)
    report = {"candidates": 3000, "keys": times, "median_ms": ms[len(ms) // 2], "max_ms": ms[-1]}
    ARTEFACTS.mkdir(exist_ok=True)
    (ARTEFACTS / "review-key-times.json").write_text(json.dumps(report, indent=1))
    print(f"key press to painted frame on 3000 candidates: median {report['median_ms']:.1f} ms, max {report['max_ms']:.1f} ms")
    assert report["median_ms"] < 1000  # loose: a shared CI machine; the page's target is 100 ms


HOSTILE = "x\"' <img src=x onerror=window.__pwned=1>"


def test_hostile_names_show_as_text(slide, chromium, tmp_path):
    """A slide and result named with HTML and script: the review page and the cohort index
    show the name as text and no script runs (each payload would set window.__pwned)."""
    from browser import Browser
    from midog.results.review import ReviewEntry, render_page, write_index
    from test_review import page_data

    out = tmp_path / "out"
    image = tmp_path / f"{HOSTILE}.tiff"
    image.write_bytes(slide["image"].read_bytes())
    result = tmp_path / f"{HOSTILE}.json"
    result.write_text(slide["result"].read_text())
    javascript = tmp_path / "javascript:window.__pwned=2.json"  # as a link: a scheme, unless made a path
    javascript.write_text(slide["result"].read_text())
    assert main(["review", str(result), str(javascript), "--image", str(image), str(image), "-o", str(out), "--quiet", "--area-mm2", "0.02", "--gallery", "3"]) == 0
    # What no file name can hold ("/"), a page's data and an index row may: "</script>".
    data = page_data(out / f"{HOSTILE}.html")
    data["name"] = "</script><script>window.__pwned=3</script>"
    data["image"] = "<svg onload=window.__pwned=4>"
    (out / "crafted.html").write_text(render_page(data))
    crafted_index = tmp_path / "crafted-index"
    crafted_index.mkdir()
    write_index([ReviewEntry("</script><script>window.__pwned=5</script>", error="</script><img src=x onerror=window.__pwned=6>")], crafted_index)
    browser = Browser(chromium, tmp_path / "profile")
    try:
        for page, shown in ((out / f"{HOSTILE}.html", HOSTILE), (out / "crafted.html", data["name"])):
            browser.open(page)
            time.sleep(0.3)  # an image's onerror fires after its load fails
            assert browser.evaluate("window.__pwned") is None
            assert browser.evaluate("document.getElementById('title').textContent") == shown
            assert browser.evaluate("document.title") == f"{shown}: midog review"
            assert browser.evaluate("document.querySelectorAll('img[src=x], svg[onload], script:not([id]):not(:empty)').length") <= 2  # the page's own two scripts
            assert browser.evaluate("document.querySelectorAll('script').length") == 3  # data, viewer, review mode
        assert browser.evaluate("document.getElementById('image-name').textContent").startswith(data["image"])
        browser.open(out / "index.html", ready="document.querySelectorAll('#cohort tbody tr').length > 0")
        time.sleep(0.3)
        assert browser.evaluate("window.__pwned") is None
        names = browser.evaluate("Array.from(document.querySelectorAll('#cohort tbody td:nth-child(2) a')).map(a => a.textContent)")
        assert sorted(names) == sorted([HOSTILE, "javascript:window.__pwned=2"])
        assert browser.evaluate("Array.from(document.querySelectorAll('#cohort a')).every(a => a.protocol === 'file:')")
        browser.evaluate("Array.from(document.querySelectorAll('#cohort tbody td:nth-child(2) a')).find(a => a.textContent.startsWith('javascript')).click()")
        browser.wait_for("document.readyState === 'complete' && document.body && document.body.dataset.ready === '1'")
        assert browser.evaluate("window.__pwned") is None and browser.evaluate("document.getElementById('title').textContent") == "javascript:window.__pwned=2"
        browser.open(crafted_index / "index.html", ready="document.querySelectorAll('#cohort tbody tr').length > 0")
        time.sleep(0.3)
        assert browser.evaluate("window.__pwned") is None
        assert browser.evaluate("document.querySelector('#cohort tbody tr td:nth-child(2)').textContent") == "</script><script>window.__pwned=5</script>"
        assert browser.evaluate("document.querySelector('#cohort tbody tr td:nth-child(3)').textContent") == "</script><img src=x onerror=window.__pwned=6>"
    finally:
        browser.close()


def test_counts_say_what_they_rest_on(slide, chromium, tmp_path, capsys):
    """A hotspot larger than the tissue: `midog count`, its JSON and the page give the tissue
    in the hotspot and the density of that tissue; field counts read "per 10 HPF"; collapsed
    score cut-offs are flagged."""
    from browser import Browser

    out = tmp_path / "count.json"
    assert main(["count", str(slide["result"]), "--image", str(slide["image"]), "-o", str(out)]) == 0
    printed = capsys.readouterr()
    counted = json.loads(out.read_text())
    h = counted["hotspot"]
    assert h["area_mm2"] == 2.0 and h["area_in_tissue_mm2"] < 0.07 and h["tissue_share"] == pytest.approx(h["area_in_tissue_mm2"] / 2)
    assert h["per_mm2_of_tissue"] == pytest.approx(h["count"] / h["area_in_tissue_mm2"])
    assert f"{h['per_mm2_of_tissue']:.4g}/mm² of tissue" in printed.out
    assert any("of the 2 mm² hotspot is tissue" in n for n in counted["notes"]) and "of the 2 mm² hotspot is tissue" in printed.err
    fields = tmp_path / "fields.json"
    assert main(["count", str(slide["result"]), "--image", str(slide["image"]), "-o", str(fields), "--fields", "10", "--field-diameter-mm", "0.1"]) == 0
    f = json.loads(fields.read_text())
    assert f["hotspot"]["per_fields"] == f"{f['hotspot']['count']} per 10 HPF (field diameter 0.1 mm)"
    assert f["score_cutoffs_collapse"] and any("cut-offs collapse" in n for n in f["notes"])
    assert "per 10 HPF (field diameter 0.1 mm)" in capsys.readouterr().out

    assert main(["review", str(slide["result"]), "--image", str(slide["image"]), "-o", str(tmp_path / "out"), "--quiet", "--gallery", "0"]) == 0
    browser = Browser(chromium, tmp_path / "profile")
    try:
        browser.open(tmp_path / "out" / "region.html")
        text = lambda i: browser.evaluate(f"document.getElementById('{i}').textContent")  # noqa: E731
        assert text("count-hotspot") == str(h["count"])
        assert text("count-hotspot-tissue") == f"{h['area_in_tissue_mm2']:.4g} mm² ({round(100 * h['tissue_share'])}%)"
        assert float(text("count-hotspot-tissue-density")) == pytest.approx(h["per_mm2_of_tissue"], abs=0.005)
        assert text("count-notes") == "".join(counted["notes"])
        assert browser.evaluate("document.querySelector('#overlay .hotspot-label').textContent").startswith(f"{h['count']} (")
        assert browser.problems() == []
    finally:
        browser.close()


def test_review_floor_chooses_the_candidates_offered(slide, tmp_path, capsys):
    from test_review import page_data

    out = tmp_path / "out"
    assert main(["review", str(slide["result"]), "--image", str(slide["image"]), "-o", str(out), "--quiet", "--gallery", "0", "--review-floor", "0.9"]) == 0
    review = page_data(out / "region.html")["review"]
    scores = slide["scores"]
    assert review["order"] == [int(i) for i in np.argsort(-scores, kind="stable") if scores[i] >= 0.9] and review["floor"] == 0.9
    assert review["labels_file"] == "region.labels.json" and len(review["hash"]) == 64
    assert main(["review", str(slide["result"]), "--image", str(slide["image"]), "-o", str(out), "--review-floor", "2"]) == 2
    assert "--review-floor must lie in [0, 1]" in capsys.readouterr().err
