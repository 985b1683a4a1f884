"""Official MIDOG evaluation: hand-computed matching, AP, MIDOG.json conversion, the
`midog evaluate` and `midog umap` commands end to end."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest

from midog.commands import cli
from midog.errors import MidogError
from midog.evaluation import ap, features, io, metrics, tables

SHARED_MIDOG_JSON = Path(__file__).resolve().parents[2] / "shared" / "midog" / "MIDOG.json"


def pts(*xy: tuple[float, float]) -> np.ndarray:
    return np.array([[x, y, 0.0] for x, y in xy]).reshape(-1, 3)


def write_points(path: Path, points: list[tuple[float, float, float | None, str | None]]) -> None:
    """A Multiple points file; probability/name None -> 2021 style (key left out)."""
    entries = []
    for x, y, p, name in points:
        e: dict = {"point": [x, y, 0]}
        if p is not None:
            e["probability"] = p
        if name is not None:
            e["name"] = name
        entries.append(e)
    path.write_text(json.dumps({"type": "Multiple points", "points": entries, "version": {"major": 1, "minor": 0}}))


def run_cli(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> int:
    # Only our subcommands: the test must not depend on other stages importing cleanly.
    monkeypatch.setattr(cli, "COMMAND_MODULES", ["midog.commands.evaluate"])
    return cli.main(argv)


# ------------------------------------------------------------------ official F1 matching


def test_duplicates_near_one_ground_truth_give_one_tp_rest_fp() -> None:
    s = metrics.score_case(pts((1.0, 1.0)), pts((1.001, 1.0), (1.0, 1.002), (0.999, 0.999)))
    assert (s.true_positives, s.false_positives, s.false_negatives) == (1, 2, 0)


def test_match_radius_is_7_5_micrometres() -> None:
    inside = metrics.score_case(pts((0.5, 0.5)), pts((0.5 + 0.0074, 0.5)))
    outside = metrics.score_case(pts((0.5, 0.5)), pts((0.5 + 0.0076, 0.5)))
    assert (inside.true_positives, inside.false_positives, inside.false_negatives) == (1, 0, 0)
    assert (outside.true_positives, outside.false_positives, outside.false_negatives) == (0, 1, 1)


def test_greedy_rule_visits_ground_truth_in_order() -> None:
    # A takes its nearest prediction P (6 um) although Q (7 um) could have served it and P
    # was B's only chance: the official greedy rule gives 1 TP where optimal matching gives 2.
    gt = pts((0.0, 0.0), (0.012, 0.0))
    s = metrics.score_case(gt, pts((0.006, 0.0), (-0.007, 0.0)))
    assert (s.true_positives, s.false_positives, s.false_negatives) == (1, 1, 1)


def test_empty_predictions_and_empty_ground_truth() -> None:
    s = metrics.score_case(pts((0.1, 0.1), (0.2, 0.2), (0.3, 0.3)), pts())
    assert (s.true_positives, s.false_positives, s.false_negatives) == (0, 0, 3)
    s = metrics.score_case(pts(), pts((0.1, 0.1), (0.2, 0.2)))
    assert (s.true_positives, s.false_positives, s.false_negatives) == (0, 2, 0)
    entry = metrics.case_entry(metrics.score_case(pts(), pts()))
    assert entry["true_positives"] == entry["false_positives"] == entry["false_negatives"] == 0
    assert entry["precision"] is None and entry["f1_score"] is None  # undefined, not 1.0


def test_image_without_prediction_entry_skipped_or_counted() -> None:
    gt = {"a.tiff": pts((0.1, 0.1)), "b.tiff": pts((0.1, 0.1), (0.2, 0.2))}
    scores, skipped = metrics.score_cases(gt, {"a.tiff": pts((0.1, 0.1))})
    assert list(scores) == ["a.tiff"] and skipped == ["b.tiff"]
    assert metrics.rates(*metrics.totals(scores.values()))["f1_score"] == 1.0
    scores, skipped = metrics.score_cases(gt, {"a.tiff": pts((0.1, 0.1))}, count_missing=True)
    assert skipped == [] and scores["b.tiff"].false_negatives == 2
    tp, fp, fn = metrics.totals(scores.values())
    assert (tp, fp, fn) == (1, 0, 2)
    assert metrics.rates(tp, fp, fn)["f1_score"] == pytest.approx(2 / 4)


# ------------------------------------------------------------------ reading


def test_prediction_files_2021_and_2022_styles(tmp_path: Path) -> None:
    write_points(tmp_path / "old.json", [(0.1, 0.2, None, None), (0.3, 0.4, None, None)])
    write_points(tmp_path / "new.json", [(0.1, 0.2, 0.9, "mitotic figure"), (0.3, 0.4, 0.5, "non-mitotic figure")])
    old = io.read_prediction_file(tmp_path / "old.json")
    assert old.probability.tolist() == [1.0, 1.0] and old.detection_mask(None).all()
    assert old.detection_mask(0.99).all()
    new = io.read_prediction_file(tmp_path / "new.json")
    assert new.detection_mask(None).tolist() == [True, False]
    assert new.detection_mask(0.4).tolist() == [True, True]
    assert new.points.shape == (2, 3)


@pytest.mark.parametrize(
    "content, problem",
    [
        ("{not json", "not valid JSON"),
        ('{"type": "Multiple points"}', '"points" list'),
        ('{"points": [{"probability": 0.5}]}', 'points[0] has no "point"'),
        ('{"points": [{"point": [0.1, "x", 0]}]}', "points[0].point"),
        ('{"points": [{"point": [0.1, 0.1, 0], "probability": "high"}]}', "probability"),
    ],
)
def test_bad_prediction_file_names_file_and_problem(tmp_path: Path, content: str, problem: str) -> None:
    path = tmp_path / "001.json"
    path.write_text(content)
    with pytest.raises(MidogError) as err:
        io.read_prediction_file(path)
    assert str(path) in str(err.value) and problem in str(err.value)


def _midog_like(path: Path) -> None:
    data = {
        "images": [
            {"id": 1, "file_name": "001.tiff", "width": 600, "height": 600},
            {"id": 60, "file_name": "060.tiff", "width": 600, "height": 600},
            {"id": 120, "file_name": "120.tiff", "width": 600, "height": 600},
            {"id": 160, "file_name": "160.tiff", "width": 600, "height": 600},  # unlabelled
        ],
        "categories": [{"id": 1, "name": "mitotic figure"}, {"id": 2, "name": "not mitotic figure"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [100, 200, 150, 250]},
            {"id": 2, "image_id": 1, "category_id": 2, "bbox": [300, 300, 350, 350]},
            {"id": 3, "image_id": 60, "category_id": 1, "bbox": [100, 200, 150, 250]},
            {"id": 4, "image_id": 60, "category_id": 1, "bbox": [0, 0, 50, 50]},
            {"id": 5, "image_id": 120, "category_id": 2, "bbox": [10, 10, 60, 60]},  # look-alike only
        ],
    }
    path.write_text(json.dumps(data))


def _tiff(path: Path, px_per_cm: int, size: int = 64) -> None:
    import tifffile

    rng = np.random.default_rng(len(path.name))
    pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    tifffile.imwrite(path, pixels, photometric="rgb", resolution=(px_per_cm, px_per_cm), resolutionunit="CENTIMETER")


def test_midog_json_converted_with_each_images_spacing(tmp_path: Path) -> None:
    _midog_like(tmp_path / "MIDOG.json")
    images = tmp_path / "images"
    images.mkdir()
    _tiff(images / "001.tiff", 40000)  # 10 mm / 40000 = 0.00025 mm per px
    _tiff(images / "060.tiff", 50000)  # 0.0002 mm per px
    _tiff(images / "120.tiff", 40000)
    gt = io.read_ground_truth(tmp_path / "MIDOG.json", images_dir=images)
    assert sorted(gt.points) == ["001.tiff", "060.tiff", "120.tiff"]  # 160: no annotation, unlabelled
    np.testing.assert_allclose(gt.points["001.tiff"], [[125 * 0.00025, 225 * 0.00025, 0]])
    np.testing.assert_allclose(gt.points["060.tiff"], [[125 * 0.0002, 225 * 0.0002, 0], [25 * 0.0002, 25 * 0.0002, 0]])
    assert gt.points["120.tiff"].shape == (0, 3)  # look-alikes are not ground truth
    assert gt.domains == {"001.tiff": "Hamamatsu XR", "060.tiff": "Hamamatsu S360", "120.tiff": "Aperio CS2", "160.tiff": "Leica GT450"}

    fixed = io.read_ground_truth(tmp_path / "MIDOG.json", spacing_mm=0.00025)
    np.testing.assert_allclose(fixed.points["060.tiff"][0], [125 * 0.00025, 225 * 0.00025, 0])

    with pytest.raises(MidogError, match="--spacing-mm or --images"):
        io.read_ground_truth(tmp_path / "MIDOG.json")
    _tiff(images / "120.tiff", 1)  # 10 mm per pixel: no microscope
    with pytest.raises(MidogError, match="120.tiff"):
        io.read_ground_truth(tmp_path / "MIDOG.json", images_dir=images)
    (images / "120.tiff").unlink()
    with pytest.raises(MidogError, match="120.tiff not found"):
        io.read_ground_truth(tmp_path / "MIDOG.json", images_dir=images)


def test_real_midog_json_has_1721_mitotic_figures_in_150_images() -> None:
    if not SHARED_MIDOG_JSON.exists():
        pytest.skip(f"{SHARED_MIDOG_JSON} is absent: this check needs ../shared beside the project")
    gt = io.read_ground_truth(SHARED_MIDOG_JSON, spacing_mm=0.00025)
    assert len(gt.points) == 150
    assert sum(len(p) for p in gt.points.values()) == 1721
    assert {gt.domains[n] for n in gt.points} == {"Hamamatsu XR", "Hamamatsu S360", "Aperio CS2"}


# ------------------------------------------------------------------ AP, sweeps, AUCPR


def test_box_iou_of_points_matches_7_5_um_horizontally() -> None:
    gt = pts((0.5, 0.5))
    assert ap.match_image(gt, pts((0.5074, 0.5)), [0.9]).is_tp.tolist() == [True]
    assert ap.match_image(gt, pts((0.5076, 0.5)), [0.9]).is_tp.tolist() == [False]


def test_average_precision_hand_computed() -> None:
    # Ranked TP (0.9), FP (0.8), TP (0.7) against 2 ground truth: recall .5 .5 1, precision
    # 1 .5 .667 -> interpolated 1 .667 .667. Recall thresholds 0..0.50 (51) sample 1.0,
    # 0.51..1.00 (50) sample 2/3.
    gt = pts((0.0, 0.0), (1.0, 0.0))
    m = ap.match_image(gt, pts((1.0, 0.002), (0.5, 0.5), (0.001, 0.0)), [0.7, 0.8, 0.9])
    assert m.scores.tolist() == [0.9, 0.8, 0.7] and m.is_tp.tolist() == [True, False, True]
    assert ap.average_precision([m]) == pytest.approx((51 * 1.0 + 50 * 2 / 3) / 101)
    # A second image with one ground truth and no candidates halves the reachable recall.
    empty = ap.match_image(pts((0.3, 0.3)), pts(), [])
    expected = (34 * 1.0 + 33 * 2 / 3) / 101  # recall 1/3 at 1.0 (0..0.33), 2/3 at 2/3 (0.34..0.66)
    assert ap.average_precision([m, empty]) == pytest.approx(expected)
    assert ap.average_precision([ap.match_image(pts(), pts((0.1, 0.1)), [0.5])]) is None


def test_duplicates_in_ap_are_false_positives() -> None:
    m = ap.match_image(pts((0.2, 0.2)), pts((0.2, 0.2), (0.201, 0.2)), [0.6, 0.9])
    assert m.is_tp.tolist() == [True, False]  # the higher score takes the ground truth
    assert ap.average_precision([m]) == pytest.approx(1.0)


def test_aucpr_trapezoid_from_strictest_precision() -> None:
    assert ap.aucpr([1.0, 0.5], [0.5, 1.0]) == pytest.approx(0.5 * 1.0 + 0.5 * 0.75)
    assert ap.aucpr([np.nan, 1.0], [np.nan, 1.0]) == pytest.approx(1.0)
    assert ap.aucpr([np.nan], [np.nan]) is None


def test_sweep_counts_per_threshold() -> None:
    c = io.Candidates(pts((0.1, 0.1), (0.5, 0.5), (0.3, 0.3)), np.array([0.9, 0.7, 0.4]), np.array([True, True, False]))
    counts = ap.sweep_image(pts((0.1, 0.1), (0.3, 0.3)), c, np.array([0.3, 0.4, 0.5, 0.8, 0.95]))
    # columns TP, FP, FN
    assert counts.tolist() == [[2, 1, 0], [2, 1, 0], [1, 1, 1], [1, 0, 1], [0, 0, 2]]


# ------------------------------------------------------------------ `midog evaluate`

SCANNERS = ["Hamamatsu XR", "Hamamatsu S360", "Aperio CS2", "Leica GT450"]


def _example(tmp_path: Path) -> tuple[Path, Path, Path]:
    """8 images, 2 per scanner. Each has 2 mitotic figures: one found at 0.9, one only as a
    0.5 "non-mitotic figure" candidate; images of scanners 2-4 add one false 0.7 detection,
    image 008 has no prediction file."""
    gt, domains = {}, {}
    pred = tmp_path / "pred"
    pred.mkdir()
    for i in range(8):
        name = f"{i + 1:03d}.tiff"
        domains[name] = SCANNERS[i // 2]
        a, b = (0.1 + 0.01 * i, 0.2), (0.6, 0.4 + 0.01 * i)
        gt[name] = [[*a, 0], [*b, 0]]
        points = [(a[0] + 0.003, a[1], 0.9, "mitotic figure"), (b[0], b[1] - 0.004, 0.5, "non-mitotic figure")]
        if i >= 2:
            points.append((1.0, 1.0, 0.7, "mitotic figure"))
        if i != 7:
            write_points(pred / f"{i + 1:03d}.json", points)
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "domains.json").write_text(json.dumps(domains))
    return pred, tmp_path / "gt.json", tmp_path / "domains.json"


def test_evaluate_command_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    assert "midog.commands.evaluate" in cli.COMMAND_MODULES
    pred, gt, domains = _example(tmp_path)
    out = tmp_path / "out"
    argv = ["evaluate", "--predictions", str(pred), "--ground-truth", str(gt), "--domains", str(domains), "--output", str(out), "--bootstrap", "40"]
    assert run_cli(argv, monkeypatch) == 0
    assert "skipped" in capsys.readouterr().err
    for name in ["metrics.json", "table.md", "table.csv", "report.md", "pr_curve.png", "f1_threshold.png", "bootstrap_f1.png"]:
        assert (out / name).stat().st_size > 0, name
        if name.endswith(".png"):
            assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    m = json.loads((out / "metrics.json").read_text())
    assert set(m) == {"case", "aggregates"}
    assert len(m["case"]) == 7 and "008.tiff" not in m["case"]
    assert m["case"]["001.tiff"] == {"true_positives": 1, "false_negatives": 1, "false_positives": 0, "precision": 1.0, "recall": 0.5, "f1_score": pytest.approx(2 / 3)}
    assert m["case"]["003.tiff"]["false_positives"] == 1
    agg = m["aggregates"]
    # 7 images: TP 7, FN 7, FP 5 (images 003-007).
    assert (agg["true_positives"], agg["false_positives"], agg["false_negatives"]) == (7, 5, 7)
    assert agg["precision"] == pytest.approx(7 / 12)
    assert agg["recall"] == pytest.approx(0.5)
    assert agg["f1_score"] == pytest.approx(14 / 26)
    assert agg["skipped_images"] == ["008.tiff"]
    assert agg["threshold"] is None and agg["operating_threshold"] == 0.7
    # Ranking 0.9 (7 TP), 0.7 (5 FP), 0.5 (7 TP) over 14 ground truth.
    expected_ap = (51 * 1.0 + 50 * 14 / 19) / 101
    assert agg["AP"] == pytest.approx(expected_ap)
    assert list(agg["scanners"]) == SCANNERS
    xr = agg["scanners"]["Hamamatsu XR"]
    assert (xr["images"], xr["true_positives"], xr["false_positives"], xr["false_negatives"]) == (2, 2, 0, 2)
    assert xr["precision"] == 1.0 and xr["AP"] == pytest.approx(1.0)
    gt450 = agg["scanners"]["Leica GT450"]
    assert (gt450["images"], gt450["true_positives"], gt450["false_positives"]) == (1, 1, 1)
    lo, hi = agg["f1_score_ci95"]
    assert lo <= agg["f1_score"] <= hi

    with (out / "table.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["scanner"] for r in rows] == SCANNERS + ["all"]
    assert float(rows[-1]["f1_score"]) == pytest.approx(14 / 26)
    table = (out / "table.md").read_text()
    assert "| **all** | 7 | 14 | 7 | 5 | 7 | 0.5833 | 0.5000 | 0.5385 |" in table
    report_md = (out / "report.md").read_text()
    for link in ["table.md", "table.csv", "metrics.json", "pr_curve.png", "f1_threshold.png", "bootstrap_f1.png"]:
        assert f"({link})" in report_md

    # --threshold 0.4 admits the 0.5 candidates; --count-missing scores 008 as all missed.
    out2 = tmp_path / "out2"
    argv = ["evaluate", "--predictions", str(pred), "--ground-truth", str(gt), "--output", str(out2), "--threshold", "0.4", "--count-missing", "--bootstrap", "0"]
    assert run_cli(argv, monkeypatch) == 0
    agg2 = json.loads((out2 / "metrics.json").read_text())["aggregates"]
    assert (agg2["true_positives"], agg2["false_positives"], agg2["false_negatives"]) == (14, 5, 2)
    assert agg2["skipped_images"] == [] and agg2["scanners"] == {}  # no domains given
    assert agg2["f1_score_ci95"] is None


def test_f1_by_names_equals_sweep_at_operating_threshold() -> None:
    rng = np.random.default_rng(3)
    gt, preds = {}, {}
    for i in range(6):
        g = rng.uniform(0, 1, (10, 2))
        c = np.vstack([g + rng.normal(0, 0.003, g.shape), rng.uniform(0, 1, (15, 2))])
        p = rng.uniform(0.05, 1, len(c))
        gt[f"{i}.tiff"] = np.column_stack([g, np.zeros(len(g))])
        preds[f"{i}.tiff"] = io.Candidates(np.column_stack([c, np.zeros(len(c))]), p, p >= 0.64)
    ev = tables.evaluate(gt, preds, n_bootstrap=0)
    assert ev.operating_threshold == pytest.approx(min(p for c in preds.values() for p in c.probability if p >= 0.64))
    _, _, f1 = ap.curve(ev.sweep.totals(ev.all.images))
    at = int(np.searchsorted(ev.sweep.thresholds, ev.operating_threshold))
    assert f1[at] == pytest.approx(ev.all.values["f1_score"])


def test_evaluate_command_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    pred, gt, domains = _example(tmp_path)
    base = ["evaluate", "--predictions", str(pred), "--ground-truth", str(gt), "--output", str(tmp_path / "o")]
    (pred / "003.json").write_text('{"points": 5}')
    assert run_cli(base, monkeypatch) == 1
    assert "003.json" in capsys.readouterr().err
    (pred / "003.json").unlink()
    (tmp_path / "few.json").write_text(json.dumps({"001.tiff": "Hamamatsu XR"}))
    assert run_cli(base + ["--domains", str(tmp_path / "few.json")], monkeypatch) == 1
    assert "no scanner for" in capsys.readouterr().err
    assert run_cli(base + ["--threshold", "1.5"], monkeypatch) == 1


# ------------------------------------------------------------------ `midog umap`


def test_umap_command_with_random_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, random_weights: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    for name in ["001.tiff", "060.tiff", "120.tiff"]:
        _tiff(images / name, 40000, size=600)
    _tiff(images / "999.tiff", 40000, size=64)  # not in the domains file: ignored
    (tmp_path / "domains.json").write_text(json.dumps({"001.tiff": "Hamamatsu XR", "060.tiff": "Hamamatsu S360", "120.tiff": "Aperio CS2"}))

    seen = {}

    def fake_umap(feats: np.ndarray, seed: int = 0) -> np.ndarray:
        # UMAP's numba JIT costs ~15 s per process; its own test below runs on demand.
        seen["features"] = feats
        return feats[:, :2]

    monkeypatch.setattr(features, "project_umap", fake_umap)
    out = tmp_path / "map" / "umap.png"
    argv = ["umap", "--images", str(images), "--weights", str(random_weights), "--domains", str(tmp_path / "domains.json"), "--output", str(out), "--patches-per-image", "1", "--device", "cpu"]
    assert run_cli(argv, monkeypatch) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert seen["features"].shape == (3, 512)
    assert np.isfinite(seen["features"]).all()


def test_sample_origins_stay_inside_and_pad_short_axes() -> None:
    rng = np.random.default_rng(0)
    origins = features.sample_origins(700, 100, 50, 512, rng)  # 700 wide, 100 high
    assert len(origins) == 50
    assert all(0 <= x <= 700 - 512 and y == 0 for x, y in origins)
    assert len({x for x, _ in origins}) > 1  # positions are random, not one fixed patch


def test_small_image_patches_are_padded_as_detector_tiles(tmp_path: Path) -> None:
    """Features read through the core: a patch of an image smaller than a tile is padded
    with the normalisation mean (zero input), exactly as `midog detect` pads it."""
    import tifffile
    import torch

    from midog.slides.readers import open_slide
    from midog.detector.tiles import Normalizer, read_tile

    pixels = np.random.default_rng(1).integers(0, 256, (100, 700, 3), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "small.tiff", pixels, photometric="rgb", resolution=(40000, 40000), resolutionunit="CENTIMETER")
    origins = features.sample_origins(700, 100, 3, 512, np.random.default_rng(0))
    with open_slide(tmp_path / "small.tiff") as slide:
        patches = np.stack([read_tile(slide, x, y) for x, y in origins])
    for (x, _), patch in zip(origins, patches):
        np.testing.assert_array_equal(patch[:100], pixels[:, x : x + 512])
    normalised = Normalizer()(torch.from_numpy(patches))
    assert torch.all(normalised[:, :, 100:].abs() < 6e-3)  # padding is zero input up to uint8 rounding


@pytest.mark.skipif(not os.environ.get("MIDOG_SLOW_TESTS"), reason="UMAP's numba compilation takes ~15 s; set MIDOG_SLOW_TESTS=1")
def test_project_umap_real() -> None:
    feats = np.random.default_rng(0).normal(size=(12, 512))
    emb = features.project_umap(feats, seed=0)
    assert emb.shape == (12, 2) and np.isfinite(emb).all()
