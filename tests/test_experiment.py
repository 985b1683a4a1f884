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
    "--umap-patches", "1", "--no-progress",
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
    assert {r["arm"] for r in rows} == {"none", "calibrate K=1"} and all(r["f1"] <= r["best_f1"] + 1e-9 for r in rows)
