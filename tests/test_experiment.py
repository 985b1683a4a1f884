"""`midog experiment`: one CI-size run on the midog2021 synthetic scanners produces the
report with every section; its tables agree with `midog evaluate` run separately on the
same predictions; the unseen scanners never reach training; the model definitions; the
operating point's plateau rule."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from midog import synth
from midog.commands import main
from midog.commands.experiment import add_cli, config_from_args
from midog.config import REFERENCE, with_normalisation
from midog.errors import MidogError
from midog.training.experiment import ExperimentConfig, model_config, plateau_threshold

MODELS = ("weak", "strong", "da")
TINY = [
    "--backbone", "none", "--patch-size", "224", "--per-scanner", "1", "--train-patches", "1", "--val-patches", "1",
    "--epochs", "1", "--val-per-scanner", "1", "--test-per-scanner", "1", "--threads", "2", "--bootstrap", "20",
    "--umap-patches", "1", "--no-progress", "--finetune-ks", "1", "--finetune-epochs", "1",
]


@pytest.fixture(scope="module")
def experiment(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A 3-image-per-scanner midog2021 set and one experiment over it (about 1-2 min on 2 cores)."""
    root = tmp_path_factory.mktemp("experiment")
    data = root / "data"
    synth.make_dataset(data, seed=5, images_per_scanner=3, size=(448, 448), profiles="midog2021")
    out = root / "exp"
    assert main(["experiment", str(data / "MIDOG.json"), "--out", str(out), *TINY]) == 0
    return data, out


def test_report_has_every_section_and_figure(experiment) -> None:
    _, out = experiment
    report = (out / "report.md").read_text()
    for heading in ("## What was found", "## Table 1", "## Spread over seeds", "## Bootstrapped F1 per scanner",
                    "## Operating point and how it transfers", "## UMAP of encoder features", "## Training curves"):
        assert heading in report, heading
    for png in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report):
        assert (out / png).is_file() and (out / png).stat().st_size > 1000, png
    assert {"bootstrap_f1.png", "f1_threshold.png", "training_curves.png"} <= {p.name for p in out.glob("*.png")}
    assert sorted(p.name for p in (out / "seed0").glob("*-umap.png")) == [f"{m}-umap.png" for m in sorted(MODELS)]
    for scanner in [s.name for s in synth.SCANNER_SETS["midog2021"].all]:
        assert scanner in report


def _table1(report: str) -> dict[str, list[str]]:
    block = report.split("## Table 1")[1].split("\n\n")[1]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in block.splitlines()[2:]]
    return {r[0].strip("*"): r[2:] for r in rows}


def test_tables_agree_with_midog_evaluate(experiment, tmp_path: Path) -> None:
    data, out = experiment
    results = json.loads((out / "results.json").read_text())
    table = _table1((out / "report.md").read_text())
    for k, model in enumerate(MODELS):
        thr = results["chosen_threshold"][f"seed 0 {model}"]
        ev_dir = tmp_path / model
        assert main(["evaluate", "--predictions", str(out / "seed0" / f"{model}-predictions"), "--ground-truth",
                     str(data / "ground_truth.json"), "--domains", str(data / "domains.json"), "--threshold", str(thr),
                     "--output", str(ev_dir), "--bootstrap", "0"]) == 0
        agg = json.loads((ev_dir / "metrics.json").read_text())["aggregates"]
        expected = {**agg["scanners"], "all scanners": agg}
        rows = results["rows"][f"seed 0 {model}"]
        assert set(expected) <= set(rows)
        for name, e in expected.items():
            r = rows[name]
            assert (r["tp"], r["fp"], r["fn"], r["images"]) == (e["true_positives"], e["false_positives"], e["false_negatives"], e["images"])
            for key, cell in zip(("precision", "recall", "f1_score"), table[name][3 * k : 3 * k + 3]):
                assert cell == ("n/a" if e[key] is None else f"{e[key]:.3f}"), (model, name, key)
        # Every held-out mitosis is counted: TP + FN is the ground truth of the held-out images.
        gt = json.loads((data / "ground_truth.json").read_text())
        held = json.loads((out / "seed0" / f"{model}-heldout.json").read_text())["ground_truth"]
        assert agg["true_positives"] + agg["false_negatives"] == sum(len(gt[n]) for n in held)


def test_unseen_scanners_never_in_training(experiment) -> None:
    data, out = experiment
    domains = json.loads((data / "domains.json").read_text())
    unseen = {s.name for s in synth.SCANNER_SETS["midog2021"].unseen}
    unseen_images = {n for n, s in domains.items() if s in unseen}
    assert len(unseen_images) == 6
    midog = json.loads((data / "MIDOG.json").read_text())
    assert not unseen_images & {im["file_name"] for im in midog["images"]}
    results = json.loads((out / "results.json").read_text())
    assert {s: results["status"][s] for s in unseen} == {s: "unseen" for s in unseen}
    for model in MODELS:
        run = out / "seed0" / model
        assert not unseen_images & set(json.loads((run / "split.json").read_text()))
        meta = torch.load(run / "best.pth", map_location="cpu", weights_only=True)["meta"]
        trained_on = set(meta["data"]["images"]["train"]) | set(meta["data"]["images"]["valid"])
        assert trained_on and not unseen_images & trained_on
        assert meta["data"]["scanners"] == [s.name for s in synth.SCANNER_SETS["midog2021"].training]
        held = json.loads((out / "seed0" / f"{model}-heldout.json").read_text())
        assert unseen_images <= set(held["ground_truth"])


def test_weak_model_runs_as_trained(experiment) -> None:
    _, out = experiment
    metas = {m: torch.load(out / "seed0" / m / "best.pth", map_location="cpu", weights_only=True)["meta"] for m in MODELS}
    assert metas["weak"]["normalisation"]["mean"] == [0.0, 0.0, 0.0]
    assert with_normalisation(REFERENCE, metas["weak"]).std == (1.0, 1.0, 1.0)
    assert with_normalisation(REFERENCE, metas["da"]) is REFERENCE
    assert [metas[m]["recipe"]["domain_weight"] for m in MODELS] == [0.0, 0.0, 1.0]
    assert [metas[m]["train"]["augment"]["enabled"] for m in MODELS] == [False, True, True]


def test_finished_training_is_reused_and_interrupted_resumed(experiment, monkeypatch) -> None:
    from midog.training import experiment as exp_mod
    from midog.training import loop

    data, out = experiment
    sub = argparse.ArgumentParser().add_subparsers()
    add_cli(sub)
    cfg = config_from_args(sub.choices["experiment"].parse_args([str(data / "MIDOG.json"), "--out", str(out), *TINY]))
    run = model_config(cfg.base, "weak", 0, out / "seed0" / "weak")
    calls = []
    monkeypatch.setattr(loop, "train", lambda c, resume=False, stop_after=None: calls.append(resume) or {"epochs_done": 1})
    assert exp_mod.train_or_resume(run)["reused"] is True and calls == []
    # A run without its summary (killed mid-epoch) continues from last.pt.
    (out / "seed0" / "weak" / "summary.json").rename(out / "seed0" / "weak" / "summary.bak")
    try:
        exp_mod.train_or_resume(run)
    finally:
        (out / "seed0" / "weak" / "summary.bak").rename(out / "seed0" / "weak" / "summary.json")
    assert calls == [True]


def test_adapt_and_fine_tune_arms_never_see_the_images_they_are_scored_on(experiment) -> None:
    """The CI run's arms: every shifted scanner with images to spare has "none", "calibrate K",
    "adapt" and "fine-tune K=1" rows over the same scored images; adapt re-estimated on the
    unscored images only; the fine-tuning data hold the reviewed image and none of the scored
    ones, started from the model's best.pth, and its operating point is its own."""
    from midog.training.experiment_adapt import scanner_images

    data, out = experiment
    results = json.loads((out / "results.json").read_text())
    rows = results["adaptation"]
    held = json.loads((out / "seed0" / "strong-heldout.json").read_text())
    for scanner in [s.name for s in synth.SCANNER_SETS["midog2021"].unseen]:
        names, usable, scored = scanner_images([n for n, d in held["domains"].items() if d == scanner], 0, scanner)
        assert usable == [1, 2] and len(scored) == 1
        mine = {r["arm"]: r for r in rows if r["model"] == "strong" and r["seed"] == 0 and r["scanner"] == scanner}
        assert {"none", "calibrate K=1", "calibrate K=2", "adapt", "fine-tune K=1"} <= set(mine)
        assert len({(r["images"], r["best_f1"]) for r in mine.values()}) == 1  # one set of scored images, one base best
        slug = "".join(c if c.isalnum() else "-" for c in scanner)
        adapted = torch.load(out / "seed0" / "strong-arms" / f"adapt-{slug}.pth", map_location="cpu", weights_only=True)["meta"]
        assert sorted(Path(p).name for p in adapted["adaptation"]["images"]) == sorted(names[:2])
        assert not set(scored) & {Path(p).name for p in adapted["adaptation"]["images"]}
        folder = out / "seed0" / "strong-arms" / f"finetune-{slug}-K1"
        ft = json.loads((folder / "MIDOG.json").read_text())
        files = {im["file_name"] for im in ft["images"]}
        assert names[0] in files and not set(scored) & files and not set(names[1:]) & files
        meta = torch.load(folder / "run" / "best.pth", map_location="cpu", weights_only=True)["meta"]
        assert meta["train"]["init"] == str(out / "seed0" / "strong" / "best.pth")
        assert meta["train"]["optim"]["epochs"] == 1 and meta["recipe"]["domain_weight"] == 0.0
        assert names[0] in meta["data"]["images"]["train"]
    report = (out / "report.md").read_text().split("## Adaptation axis")[1].split("\n## ")[0]
    assert "adapt: F1 at threshold" in report and "fine-tune K=1: F1 at threshold" in report and "own best" in report


def test_fine_tuning_set_has_the_reviewed_figures_and_the_labelled_training_images(tmp_path: Path) -> None:
    """finetune_set's MIDOG.json, scanners.json and split file, read back as `midog train` reads
    them: four scanners, the target labelled with a box around every reviewed figure (the
    ground truth in mm over the image's spacing), the unlabelled scanner's images left out,
    the last reviewed image validating."""
    from midog.config import run_config
    from midog.evaluation.io import read_ground_truth, read_spacing_mm
    from midog.training.data import apply_split, load_midog, read_scanner_ranges, read_split_file, seeded_split
    from midog.training.experiment import training_dataset
    from midog.training.experiment_arms import BOX_PX, finetune_set

    data = tmp_path / "data"
    synth.make_dataset(data, seed=3, images_per_scanner=3, size=(320, 320), profiles="midog2021")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    cfg = run_config(str(data / "MIDOG.json"), str(run_dir), val_per_scanner=1, test_per_scanner=1)
    split = seeded_split(training_dataset(cfg.data), 1, 1, 0)
    (run_dir / "split.json").write_text(json.dumps(split))
    domains = json.loads((data / "domains.json").read_text())
    target = "RS-like"
    reviewed = sorted(n for n, d in domains.items() if d == target)[:2]
    gt = read_ground_truth(data / "ground_truth.json").points
    fields = finetune_set(run_dir, cfg.data, reviewed, gt, target, tmp_path / "ft")
    ranges, unlabelled = read_scanner_ranges(fields["scanners_file"])
    assert unlabelled is None and len(ranges) == 4 and target in ranges and "Leica GT450-like" not in ranges
    ds = load_midog(fields["annotations"], fields["images_dir"], ranges, None)
    ft_split = read_split_file(fields["split_file"])
    parts = apply_split(ds, ft_split)
    assert [r.file_name for r in parts["train"] if r.scanner == target] == reviewed[:1]
    assert [r.file_name for r in parts["valid"] if r.scanner == target] == reviewed[1:]
    assert all(r.labelled for r in ds.records) and not parts["test"]
    # The training scanners' images keep their split (test images stay out).
    assert {r.file_name for r in parts["train"] if r.scanner != target} == {n for n, p in split.items() if p == "train" and domains[n] != "Leica GT450-like"}
    for r in (r for r in ds.records if r.scanner == target):
        centres = (r.boxes[:, :2] + r.boxes[:, 2:]) / 2 * read_spacing_mm(data / r.file_name)
        assert len(r.boxes) == len(gt[r.file_name]) > 0 and np.allclose(r.boxes[:, 2] - r.boxes[:, 0], BOX_PX)
        assert np.allclose(centres, gt[r.file_name][:, :2], atol=1e-6)


def test_experiment_arm_options_are_checked() -> None:
    from midog.config import run_config

    base = run_config("MIDOG.json", "out", test_per_scanner=1)
    with pytest.raises(MidogError, match="--arms"):
        ExperimentConfig(base, arms=("calibrate", "stain"))
    with pytest.raises(MidogError, match="--finetune-ks"):
        ExperimentConfig(base, finetune_ks=(3,))
    assert ExperimentConfig(base).arms == ("calibrate", "adapt", "finetune")


def test_model_definitions(tmp_path: Path) -> None:
    from midog.config import run_config

    base = run_config(str(tmp_path / "MIDOG.json"), str(tmp_path), test_per_scanner=1, enabled=False, domain_weight=0.5)
    weak, strong, da = (model_config(base, m, 3, tmp_path / m) for m in MODELS)
    assert (weak.standardize, weak.augment.enabled, weak.objective.domain_weight) == (False, False, 0.0)
    assert (strong.standardize, strong.augment.enabled, strong.objective.domain_weight) == (True, True, 0.0)
    assert (da.standardize, da.augment.enabled, da.objective.domain_weight) == (True, True, 0.5)
    assert {weak.seed, strong.seed, da.seed} == {3}
    assert weak.optim == strong.optim == da.optim and weak.sampling == da.sampling
    with pytest.raises(MidogError, match="unknown model"):
        ExperimentConfig(base, models=("weak", "mystery"))
    with pytest.raises(MidogError, match="test-per-scanner"):
        ExperimentConfig(run_config(str(tmp_path / "MIDOG.json"), str(tmp_path)))


def test_plateau_threshold_takes_the_middle_of_the_longest_run() -> None:
    t = np.round(np.arange(0.05, 1.0, 0.05), 2)
    f1 = np.full(len(t), 0.5)
    f1[3:5] = 0.9  # short peak
    f1[8:15] = 0.89  # long plateau within the tolerance
    assert t[plateau_threshold(t, f1, 0.02)] == t[11]
    assert plateau_threshold(t, f1, 0.0) == 3  # exact maximum: the first of the two tied
    f1[:] = np.nan
    f1[6] = 0.4
    assert plateau_threshold(t, f1, 0.02) == 6


def test_report_tables_on_crafted_predictions_match_midog_evaluate(tmp_path: Path) -> None:
    """Detections that hit and miss (the CI run's tiny models find nothing): Table 1 and the
    spread over two seeds against `midog evaluate` on the very same prediction files."""
    from midog.atomic import write_json_atomic
    from midog.config import run_config
    from midog.evaluation.io import read_predictions
    from midog.evaluation.tables import evaluate
    from midog.training.experiment import ExperimentResult, ModelResult, ValidationCurve
    from midog.training.experiment_report import write_report

    rng = np.random.default_rng(0)
    gt = {f"{i:03d}.tiff": np.column_stack([rng.uniform(0, 1, (5, 2)), np.zeros(5)]) for i in range(1, 7)}
    domains = {n: ("A", "A", "B", "B", "U", "U")[i] for i, n in enumerate(sorted(gt))}
    status = {"A": "seen, labelled", "B": "seen, unlabelled", "U": "unseen"}
    (tmp_path / "gt.json").write_text(json.dumps({n: p.tolist() for n, p in gt.items()}))
    (tmp_path / "domains.json").write_text(json.dumps(domains))
    cfg = ExperimentConfig(run_config(str(tmp_path / "MIDOG.json"), str(tmp_path / "exp"), test_per_scanner=1), bootstrap=30)
    results = []
    for seed in (0, 1):
        for k, model in enumerate(MODELS):
            pred = tmp_path / "exp" / f"seed{seed}" / f"{model}-predictions"
            for n, pts in gt.items():
                hits = pts[: 1 + (k + seed + int(n[:3])) % 5]  # some found, some missed
                fps = np.column_stack([rng.uniform(2, 3, (k + 1, 2)), np.zeros(k + 1)])
                points = [{"point": p.tolist(), "probability": float(rng.uniform(0.3, 1.0)), "name": "mitotic figure"} for p in np.vstack([hits, fps])]
                write_json_atomic(pred / f"{n[:3]}.json", {"type": "Multiple points", "points": points, "version": {"major": 1, "minor": 0}})
            found = read_predictions(pred)
            ev = evaluate(gt, {f"{s}.tiff": c for s, c in found.items()}, domains, 0.5, False, 30, seed)
            val = ValidationCurve(np.array([0.5]), np.array([1.0]), {}, 0.5)
            run = tmp_path / "exp" / f"seed{seed}" / model
            write_json_atomic(run.parent / f"{model}-heldout.json", {"ground_truth": {n: p.tolist() for n, p in gt.items()}, "domains": domains, "status": status, "threshold": 0.5})
            results.append(ModelResult(model, seed, run, {"best": {"epoch": 1}}, val, ev, pred, [], None))
    for seed in (0, 1):  # what experiment_arms records for an adapt arm, read into the same table
        write_json_atomic(tmp_path / "exp" / f"seed{seed}" / "strong-arms.json", {"rows": [{
            "model": "strong", "seed": seed, "scanner": "U", "status": "unseen", "images": 1, "best_f1": 1.0, "best_threshold": 0.3,
            "arm": "adapt", "k": 0, "threshold": 0.5, "f1": 0.25 + 0.5 * seed, "arm_best_f1": 0.9, "arm_best_threshold": 0.4}]})
    report = write_report(ExperimentResult(cfg, results, status, {}), tmp_path / "exp").read_text()
    table = _table1(report)
    for k, model in enumerate(MODELS):
        out = tmp_path / f"eval-{model}"
        assert main(["evaluate", "--predictions", str(tmp_path / "exp" / "seed0" / f"{model}-predictions"), "--ground-truth",
                     str(tmp_path / "gt.json"), "--domains", str(tmp_path / "domains.json"), "--threshold", "0.5",
                     "--output", str(out), "--bootstrap", "0"]) == 0
        agg = json.loads((out / "metrics.json").read_text())["aggregates"]
        assert 0 < agg["f1_score"] < 1
        for name, e in {**agg["scanners"], "all scanners": agg}.items():
            for key, cell in zip(("precision", "recall", "f1_score"), table[name][3 * k : 3 * k + 3]):
                assert cell == f"{e[key]:.3f}", (model, name, key)
    assert "## Spread over seeds" in report and "mean ± sd" in report.split("## Spread over seeds")[1].split("##")[0]
    assert "Seed 1:" in report
    # The findings read the seed means, not seed 0 alone.
    found = report.split("## What was found")[1].split("##")[0]
    assert "Read from the mean over seeds 0, 1." in found
    f1 = {(r.model, r.seed): r.evaluation.all.values["f1_score"] for r in results}
    for model in MODELS:
        assert f"{model} {(f1[model, 0] + f1[model, 1]) / 2:.3f}" in found.split("**all scanners**")[1].split("\n")[0]
    # The adaptation axis: the shifted scanners (B unlabelled, U unseen), 2 images each: K=1 reviewed, 1 scored.
    axis = report.split("## Adaptation axis")[1].split("\n## ")[0]
    for model in MODELS:
        for sc in ("B", "U"):
            assert f"| {model} | {sc} | 1 |" in axis
    rows = json.loads((tmp_path / "exp" / "results.json").read_text())["adaptation"]
    assert {r["arm"] for r in rows} == {"none", "calibrate K=1", "adapt"} and all(r["f1"] <= r["best_f1"] + 1e-9 for r in rows)
    strong_u = next(line for line in axis.splitlines() if line.startswith("| strong | U |"))
    assert "| 0.500 (0.250-0.750) at 0.50; own best 0.900 |" in strong_u  # adapt, seed mean (range), its own best
    assert "strong, over the shifted scanners and seeds: " in axis and "adapt F1 0.500 (gap to best 0.500; 2 rows)" in axis
