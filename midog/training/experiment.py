"""The paper's experiment as one run (`midog experiment`): weak, strong and
domain-adversarial models trained on the same data with the same budget, scored per
scanner on held-out images of seen and unseen scanners.

The three models, by the paper's definitions (Wilm et al. 2021, Table 1):
- weak: no input normalisation (the network sees pixel / 255) and no augmentation;
- strong: normalisation and augmentation, no domain adaptation (domain weight 0);
- da: the reference recipe (normalisation, augmentation, domain-adversarial training).
Everything else (data, split, epochs, patches, learning rate, seed) is the shared
`RunConfig`, so the models differ only where their definitions say.

Per model: training (resumable: a finished run is reused, an interrupted one resumed from
its last.pt), model selection as `midog train` does (best mean validation AUCPR, ties to
the more confused domain classifier), the operating point chosen on the validation images
(`plateau_threshold`), detection of the held-out images (the seeded test split plus every
ground-truth image that MIDOG.json does not list: the unseen scanners), the official
evaluation of those predictions, and the encoder-feature UMAP. `experiment_report` writes
the report from the result.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..config import RunConfig
from ..errors import MidogError

MODELS: dict[str, str] = {
    "weak": "no normalisation, no augmentation, no domain adaptation",
    "strong": "normalisation and augmentation, domain weight 0",
    "da": "the reference recipe: normalisation, augmentation, domain-adversarial training",
}
SEEN_LABELLED, SEEN_UNLABELLED, UNSEEN = "seen, labelled", "seen, unlabelled", "unseen"


@dataclass(frozen=True)
class ExperimentConfig:
    """One experiment: the shared training settings and what is done with the models."""

    base: RunConfig  # shared by every model; its out_dir is the experiment folder
    models: tuple[str, ...] = tuple(MODELS)
    seeds: int = 1  # runs per model, seeds base.seed, base.seed + 1, ...
    ground_truth: str | None = None  # default: ground_truth.json beside MIDOG.json
    domains: str | None = None  # default: domains.json beside MIDOG.json, else its id ranges
    min_score: float = 0.05  # candidates kept for the curves
    plateau_tolerance: float = 0.02  # pooled validation F1 this close to its maximum is the plateau
    bootstrap: int = 1000
    umap_patches: int = 10  # random patches per held-out image
    umap: bool = True
    arms: tuple[str, ...] = ("calibrate", "adapt", "finetune")  # the adaptation axis (experiment_arms)
    finetune_ks: tuple[int, ...] = (1, 2, 4)  # reviewed images of the fine-tune arms
    finetune_epochs: int | None = None  # default: a quarter of the training epochs, at least 1
    finetune_lr: float | None = None  # default: a tenth of the training max LR

    def __post_init__(self) -> None:
        unknown_arms = [a for a in self.arms if a not in ("calibrate", "adapt", "finetune")]
        if unknown_arms:
            raise MidogError(f"--arms: unknown arm(s) {', '.join(unknown_arms)}; choose from calibrate, adapt, finetune")
        if not self.finetune_ks or not set(self.finetune_ks) <= {1, 2, 4}:
            raise MidogError(f"--finetune-ks: choose from 1, 2, 4, got {self.finetune_ks}")
        unknown = [m for m in self.models if m not in MODELS]
        if unknown or not self.models:
            raise MidogError(f"--models: unknown model(s) {', '.join(unknown) or '(none given)'}; choose from {', '.join(MODELS)}")
        if self.seeds < 1:
            raise MidogError(f"--seeds must be at least 1, got {self.seeds}")
        if self.base.data.test_per_scanner < 1:
            raise MidogError("the experiment scores held-out images: --test-per-scanner must be at least 1")


def model_config(base: RunConfig, model: str, seed: int, out_dir: Path) -> RunConfig:
    """The RunConfig of one model: the shared settings with the model's definition applied."""
    objective, augment, standardize = base.objective, base.augment, True
    if model in ("weak", "strong"):
        objective = dataclasses.replace(objective, domain_weight=0.0)
    if model == "weak":
        augment, standardize = dataclasses.replace(augment, enabled=False), False
    elif not augment.enabled:
        augment = dataclasses.replace(augment, enabled=True)
    if model == "da" and objective.domain_weight <= 0:
        raise MidogError("the da model needs a domain weight above 0 (the reference's is 1.0)")
    return dataclasses.replace(base, out_dir=str(out_dir), seed=seed, objective=objective, augment=augment, standardize=standardize)


def train_or_resume(cfg: RunConfig) -> dict[str, Any]:
    """Train, continue an interrupted run from its last.pt, or reuse a finished one."""
    from .loop import train

    out = Path(cfg.out_dir)
    summary_file = out / "summary.json"
    if summary_file.is_file() and (out / "best.pth").is_file():
        summary = json.loads(summary_file.read_text())
        if summary.get("epochs_done") == summary.get("epochs") == cfg.optim.epochs:
            return {**summary, "reused": True}
    return train(cfg, resume=(out / "last.pt").is_file())


@dataclass
class HeldOut:
    """The images every model is scored on: ground truth (mm), scanner and status."""

    paths: dict[str, Path]
    ground_truth: dict[str, np.ndarray]
    domains: dict[str, str]
    status: dict[str, str]  # scanner -> SEEN_LABELLED / SEEN_UNLABELLED / UNSEEN
    unscored: list[str] = field(default_factory=list)  # held-out images without ground truth


def training_dataset(data_cfg: Any) -> Any:
    """MIDOG.json as `midog train` reads it (same scanner ranges and unlabelled scanner)."""
    from .data import default_scanners, load_midog, read_scanner_ranges

    annotations = Path(data_cfg.annotations)
    ranges, unlabeled = read_scanner_ranges(data_cfg.scanners_file) if data_cfg.scanners_file else default_scanners(annotations)
    return load_midog(annotations, data_cfg.images_dir, ranges, data_cfg.unlabeled or unlabeled, data_cfg.box_format)


def held_out_images(cfg: ExperimentConfig, split: dict[str, str]) -> HeldOut:
    """The test split of MIDOG.json plus every ground-truth image MIDOG.json does not list."""
    from ..evaluation.io import read_domains, read_ground_truth

    data_cfg = cfg.base.data
    annotations = Path(data_cfg.annotations)
    images_dir = Path(data_cfg.images_dir) if data_cfg.images_dir else annotations.parent
    dataset = training_dataset(data_cfg)
    gt_file = Path(cfg.ground_truth) if cfg.ground_truth else annotations.parent / "ground_truth.json"
    if not gt_file.is_file():
        raise MidogError(f"{gt_file}: no ground truth for the held-out images (pass --ground-truth)")
    gt = read_ground_truth(gt_file, images_dir=images_dir)
    domains = {r.file_name: r.scanner for r in dataset.records}
    dom_file = Path(cfg.domains) if cfg.domains else annotations.parent / "domains.json"
    if dom_file.is_file():
        domains.update({k: v for k, v in read_domains(dom_file).items() if k not in domains})
    elif gt.domains:
        domains.update({k: v for k, v in gt.domains.items() if k not in domains})
    training_names = {r.file_name for r in dataset.records}
    test = sorted(n for n, part in split.items() if part == "test")
    extra = sorted(n for n in gt.points if n not in training_names)
    # The unseen scanners must never reach training: an image of theirs in MIDOG.json is an error.
    seen = set(dataset.scanners)
    leaked = sorted(n for n in training_names if domains.get(n) not in seen)
    if leaked:
        raise MidogError(f"{annotations}: lists {len(leaked)} image(s) of no training scanner: {', '.join(leaked[:5])}")
    lacking = sorted(n for n in extra if n not in domains)
    if lacking:
        raise MidogError(f"{dom_file}: no scanner for held-out image(s) {', '.join(lacking[:5])}")
    names = [n for n in test + extra if n in gt.points]
    status = {}
    for n in names:
        sc = domains[n]
        status[sc] = UNSEEN if sc not in seen else SEEN_UNLABELLED if sc == dataset.unlabeled else SEEN_LABELLED
    return HeldOut(
        {n: images_dir / n for n in names}, {n: gt.points[n] for n in names}, {n: domains[n] for n in names}, status,
        [n for n in test if n not in gt.points],
    )


def plateau_threshold(thresholds: np.ndarray, f1: np.ndarray, tolerance: float = 0.02) -> int:
    """Index of the middle of the plateau of F1: the longest contiguous run of thresholds
    whose F1 lies within `tolerance` of the maximum. On a handful of validation images F1
    is a staircase with many near-equal steps; the middle of the plateau is the choice
    least likely to sit at an edge that another scanner falls off."""
    f = np.nan_to_num(np.asarray(f1, float), nan=-1.0)
    ok = f >= f.max() - tolerance
    best, start = (0, 0), None
    for i, flag in enumerate(list(ok) + [False]):
        if flag and start is None:
            start = i
        elif not flag and start is not None:
            if i - start > best[1] - best[0]:
                best = (start, i)
            start = None
    return (best[0] + best[1] - 1) // 2


@dataclass
class ValidationCurve:
    thresholds: np.ndarray
    pooled_f1: np.ndarray
    per_scanner_f1: dict[str, np.ndarray]
    chosen: float


def validation_threshold(detector: Any, records: list, tolerance: float) -> ValidationCurve:
    """The operating point: middle of the pooled-F1 plateau over all labelled validation images."""
    from ..evaluation.ap import curve, sweep
    from ..evaluation.io import Candidates
    from .validate import THRESHOLDS, ground_truth_mm

    if not records:
        raise MidogError("no labelled validation images: the operating point cannot be chosen")
    cands, gt = {}, {}
    for r in records:
        found = detector.detect(r.path, min_score=float(THRESHOLDS[0]))
        mm = found.xy_mm
        cands[r.file_name] = Candidates(np.column_stack([mm, np.zeros(len(mm))]), found.scores.astype(float), np.ones(len(mm), bool))
        gt[r.file_name] = ground_truth_mm(r, found.spacing_mm)
    sw = sweep(gt, cands, THRESHOLDS)
    pooled = curve(sw.totals(cands))[2]
    per = {sc: curve(sw.totals([r.file_name for r in records if r.scanner == sc]))[2] for sc in sorted({r.scanner for r in records})}
    return ValidationCurve(THRESHOLDS, pooled, per, float(THRESHOLDS[plateau_threshold(THRESHOLDS, pooled, tolerance)]))


@dataclass
class ModelResult:
    model: str
    seed: int
    run_dir: Path
    summary: dict[str, Any]
    validation: ValidationCurve
    evaluation: Any  # evaluation.tables.Evaluation of the held-out predictions
    predictions_dir: Path
    rows: list[dict[str, Any]]
    umap_png: Path | None


def read_log(path: Path) -> list[dict[str, Any]]:
    import csv

    if not path.is_file():
        return []
    with open(path, newline="") as fh:
        return [{k: (float(v) if v not in ("", None) else None) for k, v in row.items()} for row in csv.DictReader(fh)]


def score_model(cfg: ExperimentConfig, model: str, seed: int, run: RunConfig, summary: dict[str, Any], progress: bool) -> ModelResult:
    """Operating point on validation, detection and evaluation of the held-out images, UMAP."""
    from tqdm import tqdm

    from ..atomic import write_json_atomic
    from ..detector import Detector
    from ..results.challenge import multiple_points
    from ..evaluation.io import read_predictions
    from ..evaluation.report import write_outputs
    from ..evaluation.tables import evaluate
    from .data import apply_split

    out = Path(run.out_dir)
    split = json.loads((out / "split.json").read_text())
    held = held_out_images(cfg, split)
    valid = [r for r in apply_split(training_dataset(run.data), split)["valid"] if r.labelled]
    detector = Detector.from_weights(out / "best.pth", device=run.device)
    val = validation_threshold(detector, valid, cfg.plateau_tolerance)
    pred_dir = out.parent / f"{out.name}-predictions"
    pred_dir.mkdir(parents=True, exist_ok=True)
    for name, path in tqdm(held.paths.items(), desc=f"{model} seed {seed}: held-out", unit="image", disable=not progress, leave=False):
        found = detector.detect(path, min_score=cfg.min_score)
        write_json_atomic(pred_dir / f"{Path(name).stem}.json", multiple_points(found.at_threshold(val.chosen), "2022"), indent=1)
    # Read back from the files, exactly as `midog evaluate --predictions` does.
    found = read_predictions(pred_dir)
    stems = {Path(n).stem: n for n in held.paths}
    predictions = {stems[s]: c for s, c in found.items() if s in stems}
    ev = evaluate(held.ground_truth, predictions, held.domains, val.chosen, False, cfg.bootstrap, seed)
    write_outputs(ev, out.parent / f"{out.name}-evaluation", {"Predictions": str(pred_dir), "Ground truth": "held-out images"})
    write_json_atomic(out.parent / f"{out.name}-heldout.json", {"ground_truth": {n: p.tolist() for n, p in held.ground_truth.items()}, "domains": held.domains, "status": held.status, "threshold": val.chosen}, indent=1)
    umap_png = None
    if cfg.umap:
        from ..evaluation.features import feature_map

        umap_png = out.parent / f"{out.name}-umap.png"
        device = "cuda" if run.device == "auto" and _cuda() else ("cpu" if run.device == "auto" else run.device)
        feature_map(next(iter(held.paths.values())).parent, out / "best.pth", held.domains, umap_png, cfg.umap_patches, seed, device)
    return ModelResult(model, seed, out, summary, val, ev, pred_dir, read_log(out / "log.csv"), umap_png)


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


@dataclass
class ExperimentResult:
    config: ExperimentConfig
    results: list[ModelResult]
    status: dict[str, str]
    seconds: dict[str, float]  # "seed S model M" -> wall seconds (training + scoring)


def run_experiment(cfg: ExperimentConfig, on_stage: Callable[[str], None] | None = None) -> ExperimentResult:
    """Train and score every model and seed; `experiment_report.write_report` then writes
    the report from the result."""
    import time

    from tqdm import tqdm

    out = Path(cfg.base.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    jobs = [(seed, model) for seed in range(cfg.base.seed, cfg.base.seed + cfg.seeds) for model in cfg.models]
    results, seconds = [], {}
    for seed, model in tqdm(jobs, desc="experiment", unit="model", disable=not cfg.base.progress):
        t0 = time.perf_counter()
        run = model_config(cfg.base, model, seed, out / f"seed{seed}" / model)
        if on_stage:
            on_stage(f"seed {seed}, {model}: training ({MODELS[model]})")
        summary = train_or_resume(run)
        if on_stage:
            on_stage(f"seed {seed}, {model}: choosing the operating point, detecting, evaluating")
        results.append(score_model(cfg, model, seed, run, summary, cfg.base.progress))
        seconds[f"seed {seed} {model}"] = time.perf_counter() - t0
    status: dict[str, str] = {}
    for r in results:
        status.update(json.loads((r.run_dir.parent / f"{r.run_dir.name}-heldout.json").read_text())["status"])
    return ExperimentResult(cfg, results, status, seconds)
