"""The adaptation axis's arms that need new inference or training (`midog experiment`).

- "adapt": `midog adapt` (the encoder's BatchNorm statistics re-estimated, no labels) on the
  shifted scanner's images that are not scored: the first max K of its held-out images in the
  shared seeded order, and for the unlabelled training scanner also its images in MIDOG.json's
  training and validation splits. It deploys the model's validation operating point.
- "fine-tune K": `midog train --init best.pth` on the K reviewed images of the scanner (the
  first K in that order, now labelled) beside the training scanners' labelled training and
  validation images (so the network does not forget them), a short low-LR schedule at the
  experiment's patch budget, domain weight 0; with K >= 2 the last reviewed image validates.
  It deploys its own validated operating point (the experiment's pooled-plateau rule on its
  validation images).

Each arm is scored on the same held-out images as "none" and "calibrate K" (after the largest
K), which it never saw, at the operating point it deploys; beside it the base model's best F1
on those images and the arm's own best. Rows go to `DIR/seedS/MODEL-arms.json` as each arm
finishes; a rerun reuses them (and a finished fine-tuning run).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..errors import MidogError
from .experiment import SEEN_LABELLED, SEEN_UNLABELLED, training_dataset, train_or_resume, validation_threshold
from .experiment_adapt import KS, arms_file, f1_at, recorded_arms, scanner_images

log = logging.getLogger(__name__)
ARMS = ("calibrate", "adapt", "finetune")
BOX_PX = 50  # the MIDOG box side around a reviewed figure's centre


def detect_candidates(weights: Path, paths: dict[str, Path], min_score: float, device: str) -> dict[str, Any]:
    """Every candidate above `min_score` of each image, in mm, as the evaluation reads them."""
    from ..detector import Detector
    from ..evaluation.io import Candidates

    detector = Detector.from_weights(weights, device=device)
    out = {}
    for name, path in paths.items():
        found = detector.detect(path, min_score=min_score)
        mm = found.xy_mm
        out[name] = Candidates(np.column_stack([mm, np.zeros(len(mm))]), found.scores.astype(float), np.ones(len(mm), bool))
    return out


def finetune_set(run_dir: Path, data_cfg: Any, reviewed: list[str], gt_mm: dict[str, np.ndarray], target: str, folder: Path) -> dict[str, str]:
    """Write folder/MIDOG.json, scanners.json and split.txt: the model's labelled training and
    validation images (ids, boxes and split as trained) plus the reviewed images of `target`
    (boxes of BOX_PX around each figure, a new id range; the last one validates when K >= 2).
    Returns the fields of the fine-tuning run's DataConfig."""
    from ..evaluation.io import read_spacing_mm
    from ..slides.readers import open_slide

    dataset = training_dataset(data_cfg)
    split = json.loads((run_dir / "split.json").read_text())
    images_dir = Path(data_cfg.images_dir) if data_cfg.images_dir else Path(data_cfg.annotations).parent
    keep = [r for r in dataset.records if r.labelled and r.scanner != target and split.get(r.file_name) in ("train", "valid")]
    bad = [n for n in [r.file_name for r in keep] + reviewed if not n.lower().endswith((".tif", ".tiff"))]
    if bad:  # the split file format lists TIFFs only
        raise MidogError(f"fine-tuning arm: a split file can list only .tif/.tiff images, not {bad[0]}")
    images, annotations, ranges = [], [], {}
    for r in keep:
        images.append({"file_name": r.file_name, "id": r.image_id, "width": r.width, "height": r.height})
        annotations += [{"bbox": [float(v) for v in b], "category_id": int(c), "image_id": r.image_id, "id": len(annotations) + i + 1}
                        for i, (b, c) in enumerate(zip(r.boxes, r.categories))]
        lo, hi = ranges.get(r.scanner, (r.image_id, r.image_id))
        ranges[r.scanner] = (min(lo, r.image_id), max(hi, r.image_id))
    first = max(r.image_id for r in dataset.records) + 1
    for i, name in enumerate(reviewed):
        with open_slide(images_dir / name) as slide:
            width, height = slide.width, slide.height
        centres = np.asarray(gt_mm[name], float).reshape(-1, 3)[:, :2] / read_spacing_mm(images_dir / name)
        images.append({"file_name": name, "id": first + i, "width": width, "height": height})
        annotations += [{"bbox": [x - BOX_PX / 2, y - BOX_PX / 2, x + BOX_PX / 2, y + BOX_PX / 2], "category_id": 1,
                         "image_id": first + i, "id": len(annotations) + j + 1} for j, (x, y) in enumerate(centres.tolist())]
    ranges[target] = (first, first + len(reviewed) - 1)
    train = [r.file_name for r in keep if split[r.file_name] == "train"] + (reviewed[:-1] if len(reviewed) > 1 else reviewed)
    valid = [r.file_name for r in keep if split[r.file_name] == "valid"] + (reviewed[-1:] if len(reviewed) > 1 else [])
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "MIDOG.json").write_text(json.dumps({"images": images, "annotations": annotations,
                                                   "categories": [{"id": 1, "name": "mitotic figure"}, {"id": 2, "name": "hard negative"}]}))
    (folder / "scanners.json").write_text(json.dumps({"id_ranges": ranges, "unlabeled": None}))
    (folder / "split.txt").write_text("train/\n" + "".join(f"  {n}\n" for n in train) + "valid/\n" + "".join(f"  {n}\n" for n in valid))
    return {"annotations": str(folder / "MIDOG.json"), "images_dir": str(images_dir), "scanners_file": str(folder / "scanners.json"),
            "unlabeled": None, "split_file": str(folder / "split.txt"), "val_per_scanner": None, "test_per_scanner": 0, "box_format": "xyxy"}


def finetune_config(run: Any, data: dict[str, str], out_dir: Path, epochs: int, max_lr: float) -> Any:
    """The model's own RunConfig (its normalisation and augmentation) with the fine-tuning data,
    `init` = its best.pth, a short schedule validated once at the end, and domain weight 0."""
    return dataclasses.replace(
        run, out_dir=str(out_dir), init=str(Path(run.out_dir) / "best.pth"), val_every=epochs,
        data=dataclasses.replace(run.data, **data), optim=dataclasses.replace(run.optim, epochs=epochs, max_lr=max_lr),
        objective=dataclasses.replace(run.objective, domain_weight=0.0),
    )


def run_arms(cfg: Any, result: Any, run: Any, on_stage: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """The adapt and fine-tune rows of one model and seed (those in cfg.arms), each written to
    its arms file as soon as it is scored; rows already there are reused."""
    from .adapt import adapt
    from .data import apply_split

    wanted = [a for a in cfg.arms if a in ("adapt", "finetune")]
    record = result.run_dir.parent / f"{result.run_dir.name}-heldout.json"
    if not wanted or not record.is_file():
        return []
    held = json.loads(record.read_text())
    gt = {n: np.asarray(p, float).reshape(-1, 3) for n, p in held["ground_truth"].items()}
    images_dir = Path(run.data.images_dir) if run.data.images_dir else Path(run.data.annotations).parent
    rows = recorded_arms(result)
    done = {(r["scanner"], r["arm"]) for r in rows}
    work = result.run_dir.parent / f"{result.run_dir.name}-arms"
    device = run.device if run.device != "auto" else "cpu"

    def keep(row: dict[str, Any]) -> None:
        rows.append(row)
        from ..atomic import write_json_atomic

        write_json_atomic(arms_file(result), {"rows": rows}, indent=1)

    for scanner in sorted(s for s, st in held["status"].items() if st != SEEN_LABELLED):
        plan = scanner_images([n for n in gt if held["domains"].get(n) == scanner], result.seed, scanner, KS)
        if plan is None:
            continue
        names, usable, scored = plan
        base_at = f1_at(gt, detect_or_read(result, scored), cfg.min_score, [result.validation.chosen])
        base = {"model": result.model, "seed": result.seed, "scanner": scanner, "status": held["status"][scanner], "images": len(scored),
                "best_f1": base_at.best_f1, "best_threshold": base_at.best_threshold}
        slug = "".join(c if c.isalnum() else "-" for c in scanner)
        if "adapt" in wanted and (scanner, "adapt") not in done:
            unlabelled = names[: max(usable)]
            if held["status"][scanner] == SEEN_UNLABELLED:
                split = json.loads((result.run_dir / "split.json").read_text())
                unlabelled += [r.file_name for r in training_dataset(run.data).records
                               if r.scanner == scanner and split.get(r.file_name) in ("train", "valid")]
            if on_stage:
                on_stage(f"seed {result.seed}, {result.model}: adapt to {scanner} on {len(unlabelled)} unlabelled image(s)")
            out = work / f"adapt-{slug}.pth"
            out.parent.mkdir(parents=True, exist_ok=True)
            adapt(result.run_dir / "best.pth", [images_dir / n for n in unlabelled], out, seed=result.seed)
            at = f1_at(gt, detect_candidates(out, {n: images_dir / n for n in scored}, cfg.min_score, device), cfg.min_score, [result.validation.chosen])
            keep({**base, "arm": "adapt", "k": 0, "unlabelled_images": len(unlabelled), "threshold": result.validation.chosen,
                  "f1": at(result.validation.chosen), "arm_best_f1": at.best_f1, "arm_best_threshold": at.best_threshold})
        for k in [k for k in cfg.finetune_ks if k in usable] if "finetune" in wanted else []:
            arm = f"fine-tune K={k}"
            if (scanner, arm) in done:
                continue
            reviewed = names[:k]
            if not sum(len(gt[n]) for n in reviewed):
                continue  # no figure to learn from
            folder = work / f"finetune-{slug}-K{k}"
            data = finetune_set(result.run_dir, run.data, reviewed, gt, scanner, folder)
            epochs = cfg.finetune_epochs or max(1, run.optim.epochs // 4)
            ft = finetune_config(run, data, folder / "run", epochs, cfg.finetune_lr or run.optim.max_lr / 10)
            if on_stage:
                on_stage(f"seed {result.seed}, {result.model}: fine-tune on {k} reviewed image(s) of {scanner}, {epochs} epochs")
            train_or_resume(ft)
            valid = [r for r in apply_split(training_dataset(ft.data), json.loads((folder / "run" / "split.json").read_text()))["valid"] if r.labelled]
            from ..detector import Detector

            chosen = validation_threshold(Detector.from_weights(folder / "run" / "best.pth", device=device), valid, cfg.plateau_tolerance).chosen
            at = f1_at(gt, detect_candidates(folder / "run" / "best.pth", {n: images_dir / n for n in scored}, cfg.min_score, device), cfg.min_score, [chosen])
            keep({**base, "arm": arm, "k": k, "threshold": chosen, "f1": at(chosen), "arm_best_f1": at.best_f1, "arm_best_threshold": at.best_threshold})
    return rows


def detect_or_read(result: Any, names: list[str]) -> dict[str, Any]:
    """The base model's candidates of `names`, read from its held-out predictions."""
    from ..evaluation.io import read_predictions

    found = read_predictions(result.predictions_dir)
    return {n: found[Path(n).stem] for n in names}
