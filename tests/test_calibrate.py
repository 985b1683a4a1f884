"""`midog calibrate`: the rules on crafted predictions with a known best plateau, the bootstrap
items, the trust warning in numbers, the refusals (2021-style files, other weights), the
three ground-truth layouts, and OUT.pth's operating point used by `midog detect`'s core and
process.py."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT

SPACING = 0.00025  # mm per pixel


def points_file(path: Path, points: list[tuple[float, float, float]], style: str = "2022") -> None:
    """A "Multiple points" file: (x_mm, y_mm, probability) each."""
    entries = []
    for x, y, p in points:
        e = {"point": [x, y, 0]}
        if style == "2022":
            e.update(probability=p, name="mitotic figure" if p >= 0.5 else "non-mitotic figure")
        entries.append(e)
    path.write_text(json.dumps({"type": "Multiple points", "points": entries, "version": {"major": 1, "minor": 0}}))


def crafted(tmp_path: Path, n_images: int = 2, figures: int = 20, seed: int = 0) -> tuple[Path, dict[str, list]]:
    """Per image: `figures` mitotic figures found with probabilities in [0.60, 0.95], look-alikes
    scored in [0.05, 0.40] and a few misses: F1 is best (1.0 on the found ones) for every threshold
    in (0.40, 0.60], a plateau whose middle is 0.50."""
    rng = np.random.default_rng(seed)
    pred_dir = tmp_path / "pred"
    pred_dir.mkdir(parents=True)
    gt: dict[str, list] = {}
    for i in range(n_images):
        grid = [(0.01 + 0.03 * (k % 10), 0.01 + 0.03 * (k // 10)) for k in range(figures * 2)]
        figs, fakes = grid[:figures], grid[figures:]
        pts = [(x, y, float(rng.uniform(0.60, 0.95))) for x, y in figs]
        pts += [(x, y, float(rng.uniform(0.05, 0.40))) for x, y in fakes]
        points_file(pred_dir / f"{i:03d}.json", pts)
        gt[f"{i:03d}.tiff"] = [[x, y, 0] for x, y in figs]
    return pred_dir, gt


def reviewed_from(pred_dir: Path, gt: dict[str, list], floor: float | None = None):
    from midog.training.calibrate import read_prediction_folder, read_reviewed

    folder = read_prediction_folder(pred_dir)
    points = {n: np.asarray(p, float).reshape(-1, 3) for n, p in gt.items()}
    return read_reviewed(folder.candidates, folder.probabilities_given, points, floor, str(pred_dir))


@pytest.mark.parametrize("rule", ["jittered", "smoothed", "bagged", "bagged-plateau", "plateau", "argmax"])
def test_every_rule_lands_on_the_known_plateau(tmp_path: Path, rule: str) -> None:
    from midog.training.calibrate import calibrate

    pred_dir, gt = crafted(tmp_path, figures=40)
    cal = calibrate(reviewed_from(pred_dir, gt), previous=0.93, rule=rule, n_bootstrap=300)
    assert 0.41 <= cal.threshold <= 0.60
    assert cal.f1_at_threshold == 1.0 and cal.n_figures == 80
    if rule in ("plateau", "smoothed", "bagged-plateau"):
        assert abs(cal.threshold - 0.50) <= 0.011  # the middle of (0.40, 0.60]
    if rule == "jittered":  # the rule itself on every resample: the interval holds its choice
        assert cal.threshold_ci95[0] <= cal.threshold <= cal.threshold_ci95[1]
    # At the old operating point most figures are cut: F1 well below.
    assert cal.f1_at_previous is not None and cal.f1_at_previous < 0.5


def test_bagged_plateau_takes_the_middle_of_the_near_best_bootstrap_mean() -> None:
    """A bootstrap-mean curve with a slight peak on a wide top: bagged stands on the peak,
    bagged-plateau in the middle of the top (within 0.01), and a drop of more than 0.01
    ends the top."""
    from midog.training.calibrate import choose

    mean = np.array([0.5, 0.9, 0.905, 0.9, 0.9, 0.9, 0.5, 0.89])
    assert choose("bagged", mean, mean) == 2
    assert choose("bagged-plateau", mean, mean) == 3  # the middle of indices 1-5
    assert choose("bagged-plateau", mean, np.array([0.5, 0.9, 0.905, 0.88, 0.9, 0.9, 0.5, 0.5])) == 1  # top 1-2 only


def test_jittered_rule_leans_away_from_the_crowded_edge_of_the_plateau() -> None:
    """Reviewed items with F1 = 1 for every threshold in (0.40, 0.80]: the plain bootstrap
    sees a flat top and stands in its middle; the jittered one (scores moved in logit space)
    sees that the next slide's look-alikes spill over a crowded lower edge, and stands higher;
    with the crowd at the figures' edge instead, lower."""
    from midog.training.calibrate import GRID, Items, select

    def items(figures: list[float], false: list[float]) -> Items:
        level = lambda v: np.searchsorted(GRID, np.array(v) + 1e-9, side="right")  # noqa: E731
        return Items(level(figures), level(false), len(GRID))

    def picks(it: Items) -> tuple[float, float]:
        f1 = it.curves(np.bincount(it.figure_levels, minlength=len(GRID) + 1)[None],
                       np.bincount(it.false_levels, minlength=len(GRID) + 1)[None])[0]
        plain = select(it, f1, "bagged-plateau", 400, np.random.default_rng(0), grid=GRID)[0]
        jittered = select(it, f1, "jittered", 400, np.random.default_rng(0), grid=GRID)[0]
        return float(GRID[plain]), float(GRID[jittered])

    crowded_false = items([0.80] + [0.99] * 19, [0.40] * 20)
    plain, jittered = picks(crowded_false)
    assert abs(plain - 0.60) <= 0.011 and jittered >= plain + 0.05
    crowded_figures = items([0.80] * 20, [0.40] + [0.06] * 19)
    plain, jittered = picks(crowded_figures)
    assert abs(plain - 0.60) <= 0.011 and jittered <= plain - 0.05


def test_items_reproduce_the_swept_curve(tmp_path: Path) -> None:
    from midog.evaluation.ap import curve, sweep
    from midog.training.calibrate import GRID, Items

    pred_dir, gt = crafted(tmp_path, figures=15, seed=3)
    # Blur the separation so that the curve has real slopes: move some figures below 0.4.
    data = json.loads((pred_dir / "000.json").read_text())
    for e in data["points"][:5]:
        e["probability"] = 0.2
    (pred_dir / "000.json").write_text(json.dumps(data))
    rev = reviewed_from(pred_dir, gt)
    counts = sweep(rev.ground_truth, rev.candidates, GRID).totals(rev.candidates)
    items = Items.from_counts(counts)
    hist = lambda lv: np.bincount(lv, minlength=len(GRID) + 1)[None]  # noqa: E731
    np.testing.assert_array_equal(items.curves(hist(items.figure_levels), hist(items.false_levels))[0], curve(counts)[2])


def test_few_figures_earn_a_warning_in_numbers_and_many_do_not(tmp_path: Path) -> None:
    from midog.training.calibrate import calibrate

    few_dir, few_gt = crafted(tmp_path / "few", n_images=1, figures=8)
    # Overlapping scores: some look-alikes above some figures, so F1 varies between resamples.
    data = json.loads((few_dir / "000.json").read_text())
    for e in data["points"][8:11]:
        e["probability"] = 0.7
    (few_dir / "000.json").write_text(json.dumps(data))
    cal = calibrate(reviewed_from(few_dir, few_gt), previous=0.93, n_bootstrap=500)
    assert cal.warnings and "8 mitotic figures in 1 image(s)" in cal.warnings[0]
    assert f"{cal.ci95[0]:.2f}-{cal.ci95[1]:.2f}" in cal.warnings[0] and cal.ci95[1] - cal.ci95[0] > 0.1
    assert cal.figures_for_trust() > 8
    many_dir, many_gt = crafted(tmp_path / "many", n_images=2, figures=40)
    assert calibrate(reviewed_from(many_dir, many_gt), previous=0.93, n_bootstrap=300).warnings == []


def test_a_curve_cut_at_the_candidate_floor_is_said(tmp_path: Path) -> None:
    from midog.training.calibrate import calibrate

    pred_dir, gt = crafted(tmp_path, figures=40)
    for f in pred_dir.glob("*.json"):  # every figure scored below the files' floor of 0.62
        data = json.loads(f.read_text())
        data["points"] = [e for e in data["points"] if e["probability"] >= 0.62]
        f.write_text(json.dumps(data))
    cal = calibrate(reviewed_from(pred_dir, gt, floor=0.62), previous=0.93, n_bootstrap=100)
    assert cal.thresholds[0] == pytest.approx(0.62)
    assert any("cut at 0.62" in w for w in cal.warnings)


@pytest.fixture
def run_cli(capsys: pytest.CaptureFixture[str]):
    from midog.commands.cli import main

    def run(*args: str) -> tuple[int, str, str]:
        rc = main(["calibrate", *args])
        out = capsys.readouterr()
        return rc, out.out, out.err

    return run


@pytest.fixture(scope="module")
def demo_weights() -> Path:
    return ROOT / "weights" / "demo-synthetic.pth"


def labels_layout(gt: dict[str, list]) -> dict:
    """The review page's <stem>.labels.json layout: MIDOG.json's, 50 px boxes centred on the
    points, the spacing beside each image, unsure points apart."""
    images, annotations = [], []
    for i, (name, pts) in enumerate(sorted(gt.items()), start=1):
        images.append({"id": i, "file_name": name, "width": 1024, "height": 1024, "spacing_mm": [SPACING, SPACING]})
        for x, y, _ in pts:
            cx, cy = x / SPACING, y / SPACING
            annotations.append({"id": len(annotations) + 1, "image_id": i, "category_id": 1, "bbox": [cx - 25, cy - 25, cx + 25, cy + 25]})
        annotations.append({"id": len(annotations) + 1, "image_id": i, "category_id": 2, "bbox": [900, 900, 950, 950]})
    return {"images": images, "categories": [{"id": 1, "name": "mitotic figure"}, {"id": 2, "name": "not mitotic figure"}],
            "annotations": annotations, "unsure": []}


@pytest.mark.parametrize("layout", ["evaluator", "midog", "labels"])
def test_cli_writes_weights_that_record_the_new_operating_point(tmp_path: Path, demo_weights: Path, layout: str, run_cli) -> None:
    from midog.detector import Detector

    pred_dir, gt = crafted(tmp_path, figures=20)
    points_file(pred_dir / "999.json", [(0.1, 0.1, 0.99)])  # an image not reviewed: ignored
    # The review page saves its labels beside the predictions: not a prediction file.
    gt_file = pred_dir / "reviewed.labels.json" if layout == "labels" else tmp_path / "gt.json"
    extra: list[str] = []
    if layout == "evaluator":
        gt_file.write_text(json.dumps(gt))
    else:
        data = labels_layout(gt)
        if layout == "midog":
            data.pop("unsure")
            for im in data["images"]:
                del im["spacing_mm"]
            extra = ["--spacing-mm", str(SPACING)]
        gt_file.write_text(json.dumps(data))
    out = tmp_path / "calibrated.pth"
    rc, stdout, stderr = run_cli("--predictions", str(pred_dir), "--ground-truth", str(gt_file), "--weights", str(demo_weights),
                                 "-o", str(out), "--bootstrap", "200", *extra)
    assert rc == 0, stderr
    chosen = re.search(r"operating point (0\.\d\d) \(was 0\.93", stdout)
    assert chosen and "40 mitotic figures" in stdout
    assert 0.41 <= float(chosen.group(1)) <= 0.60  # on the plateau (0.40, 0.60]
    assert Detector.from_weights(out, "cpu").threshold == float(chosen.group(1))
    record = json.loads(out.with_name("calibrated.calibration.json").read_text())
    assert record["images"] == ["000.tiff", "001.tiff"] and record["previous_threshold"] == 0.93
    assert out.with_name("calibrated.calibration.png").stat().st_size > 1000


def test_cli_refuses_2021_style_predictions(tmp_path: Path, demo_weights: Path, run_cli) -> None:
    pred_dir, gt = crafted(tmp_path, figures=5)
    points_file(pred_dir / "001.json", [(x, y, 1.0) for x, y, _ in gt["001.tiff"]], style="2021")
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    rc, _, stderr = run_cli("--predictions", str(pred_dir), "--ground-truth", str(tmp_path / "gt.json"), "--weights", str(demo_weights), "-o", str(tmp_path / "o.pth"))
    assert rc == 1 and "001.json: 2021-style predictions" in stderr and "--style 2022" in stderr
    assert not (tmp_path / "o.pth").exists()


def test_cli_refuses_predictions_of_other_weights(tmp_path: Path, demo_weights: Path, run_cli) -> None:
    pred_dir, gt = crafted(tmp_path, figures=5)
    for stem in ("000", "001"):
        (pred_dir / f"{stem}.midog.json").write_text(json.dumps(
            {"format": "midog result info", "version": 1, "spacing_mm": [SPACING, SPACING], "weights_sha256": "ab" * 32, "threshold": 0.93, "style": "2022"}))
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    rc, _, stderr = run_cli("--predictions", str(pred_dir), "--ground-truth", str(tmp_path / "gt.json"), "--weights", str(demo_weights), "-o", str(tmp_path / "o.pth"))
    assert rc == 1 and "made with other weights" in stderr


def test_detect_and_process_use_the_calibrated_operating_point(tmp_path: Path, demo_weights: Path, run_cli, capsys: pytest.CaptureFixture[str]) -> None:
    """OUT.pth needs no flag: `midog detect --weights OUT.pth` writes at the calibrated
    threshold, and process.py with OUT.pth as its model (here the platform's model folder,
    with the published weights' manifest beside it, which does not list OUT.pth) runs at it."""
    import shutil

    from test_adapt import tissue_image

    sys.path.insert(0, str(ROOT))
    import process  # noqa: E402

    pred_dir, gt = crafted(tmp_path, figures=20)
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    model_dir = tmp_path / "model"
    out = model_dir / "RetinaNetDA.pth"  # even under the published file's name: its hash is not the manifest's
    assert run_cli("--predictions", str(pred_dir), "--ground-truth", str(tmp_path / "gt.json"), "--weights", str(demo_weights), "-o", str(out), "--bootstrap", "50")[0] == 0
    calibrated = json.loads(out.with_name("RetinaNetDA.calibration.json").read_text())["threshold"]
    assert 0.41 <= calibrated <= 0.60  # on the crafted plateau, far from the stored 0.93
    shutil.copy(ROOT / "model" / "manifest.json", model_dir / "manifest.json")
    for extra in out.parent.glob("*.calibration.*"):
        extra.unlink()
    image_dir = tmp_path / "in"
    image_dir.mkdir()
    image = tissue_image(image_dir / "slide.tiff", size=256)
    from midog.commands.cli import main

    assert main(["detect", str(image), "--weights", str(out), "-o", str(tmp_path / "slide.json"), "--device", "cpu", "--no-progress"]) == 0
    assert json.loads((tmp_path / "slide.midog.json").read_text())["threshold"] == calibrated
    capsys.readouterr()
    assert process.main(["--input", str(image_dir), "--output", str(tmp_path / "out"), "--model-dir", str(model_dir), "--device", "cpu"]) == 0
    assert f"threshold {calibrated:g}," in capsys.readouterr().err
