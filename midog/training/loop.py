"""The training loop (docs/reference-algorithm.md#training-recipe): one-cycle AdamW
(fastai 1.0.61's schedule, as the reference used), the GRL alpha schedule, validation and
model selection each epoch, checkpoints, resume, CSV log and plot. Everything a run uses
comes from its `RunConfig` (midog.config.settings: data, sampling, optimisation, the objective's
`Recipe`, augmentation, run settings), and `best.pth`'s metadata records all of it.

Run folder:
- `last.pt`: everything needed to continue (model, optimiser, scheduler, scaler, RNG,
  epoch, log, best score), replaced atomically after every epoch, so a kill loses at
  most the epoch in progress. `--resume` continues from it.
- `best.pth`: `{'model': state_dict, 'meta': {...}}` of the selected epoch; loads in
  `midog detect --weights`, whose threshold defaults to `meta['threshold']`.
- `log.csv`, `curves.png`, `split.json`, `summary.json`.

Every epoch draws its patches and augmentations from RNGs seeded by (seed, epoch), so
an interrupted and resumed run sees the same data as an uninterrupted one.

Model selection (`select="aucpr"`, the default, the paper's rule): highest mean
validation AUCPR over the labelled scanners (rounded to 3 decimals), ties broken by the
higher validation domain loss, i.e. the more confused scanner classifier. `select="loss"`
is the reference code's rule: lowest validation detection loss minus domain loss.
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import math
import time
import dataclasses
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..atomic import atomic_path, write_text_atomic
from ..config import REFERENCE, UNIT_NORMALISATION, AugmentConfig, DetectorConfig, OptimConfig, Recipe, RunConfig, make_recipe, run_config  # noqa: F401 - RunConfig, run_config: the API
from ..errors import MidogError
from .checkpoints import atomic_save, code_version, init_backbone, init_from
from .curves import plot_log
from .schedule import OneCycle, grl_alpha

log = logging.getLogger(__name__)


@dataclass
class Batch:
    """A collated training batch: normalised input and the anchors' targets."""

    x: torch.Tensor  # (B, 3, P, P) float32, normalised
    matches: torch.Tensor  # (B, N) matched box index, BACKGROUND or IGNORE
    targets: torch.Tensor  # (B, N, 4) encoded box targets (valid where matched)
    domains: torch.Tensor  # (B,) scanner index
    labelled: torch.Tensor  # (B,) bool: the patch's scanner has annotations
    boxes: list[np.ndarray]  # per patch, x1, y1, x2, y2 pixels after augmentation


def autocast(device: torch.device, amp: str | None) -> contextlib.AbstractContextManager:
    if not amp:
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


def make_batch(
    patches: list,
    anchors: torch.Tensor,
    size: int,
    rng: np.random.Generator | None = None,
    aug: AugmentConfig | None = None,
    recipe: Recipe = Recipe(),
    config: DetectorConfig = REFERENCE,
) -> Batch:
    """Patches -> network input and targets: pixels / 255 (in float64, then float32, as the
    reference's pil2tensor), optional augmentation, normalisation, matching with the
    recipe's IoU thresholds. `config` gives the standardisation (mean/std)."""
    from .augment import augment_batch
    from .matching import build_targets

    from ..detector.tiles import Normalizer

    device = anchors.device
    normalizer = Normalizer(config)
    # The core's transform: float32 division by 255 equals the reference's float64 one for
    # every uint8 value, so the parity vectors hold; augmentation works on [0, 1] pixels.
    x = normalizer.to_unit(torch.from_numpy(np.stack([p.pixels for p in patches])))
    boxes = [p.boxes for p in patches]
    if aug is not None and aug.enabled:
        x, boxes = augment_batch(x, boxes, rng, aug)
    matches, targets = build_targets(anchors, boxes, size, REFERENCE, recipe.match_fg_iou, recipe.match_bg_iou)
    return Batch(
        normalizer.standardize(x.contiguous()).to(device), matches, targets,
        torch.tensor([p.domain for p in patches], device=device),
        torch.tensor([p.labelled for p in patches], device=device), boxes,
    )


def resolve_device(cfg: RunConfig) -> tuple[torch.device, str | None]:
    from ..detector.device import pick_device

    device = pick_device(cfg.device)
    amp = cfg.amp
    if amp == "auto":
        amp = "fp16" if device.type == "cuda" else ("bf16" if torch.ops.mkldnn._is_mkldnn_bf16_supported() else "off")
    if amp not in ("off", "bf16", "fp16"):
        raise MidogError(f"--amp must be off, bf16, fp16 or auto, got {cfg.amp!r}")
    if amp == "fp16" and device.type != "cuda":
        raise MidogError("--amp fp16 needs CUDA; on the CPU use bf16")
    return device, (None if amp == "off" else amp)


# ---------------------------------------------------------------------------
# Run state
# ---------------------------------------------------------------------------


class Trainer:
    def __init__(self, cfg: RunConfig) -> None:
        from ..network.anchors import make_anchors
        from ..network.retinanet import RetinaNetDA
        from .data import ImageStore, apply_split, load_midog, read_scanner_ranges, read_split_file, seeded_split, split_fingerprint
        from .sampler import BatchSampler

        self.cfg = cfg
        sampling, data = cfg.sampling, cfg.data
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.out = Path(cfg.out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self.device, self.amp = resolve_device(cfg)
        if sampling.patch_size < 224 and cfg.objective.domain_weight > 0:
            raise MidogError("the domain classifier needs patches of at least 224 px (3 unpadded convs on the /32 map)")
        if sampling.patch_size % 32:
            raise MidogError("--patch-size must be a multiple of 32")

        ranges, unlabeled = (read_scanner_ranges(data.scanners_file) if data.scanners_file else (None, None))
        self.data = load_midog(data.annotations, data.images_dir, ranges, data.unlabeled or unlabeled, data.box_format)
        if len(self.data.scanners) != REFERENCE.n_domains:
            raise MidogError(f"the network's domain classifier has {REFERENCE.n_domains} outputs; got {len(self.data.scanners)} scanners")
        if data.split_file:
            self.split = read_split_file(data.split_file)
        else:
            self.split = seeded_split(self.data, data.val_per_scanner, data.test_per_scanner, cfg.seed)
        self.parts = apply_split(self.data, self.split)
        if not any(r.labelled for r in self.parts["train"]):
            raise MidogError("no labelled training images after the split")
        self.store = ImageStore(cfg.cache_images)
        self.train_sampler = BatchSampler(self.parts["train"], len(self.data.scanners), self.store, sampling)
        self.val_sampler = BatchSampler(self.parts["valid"], len(self.data.scanners), self.store, sampling)
        self.anchors = make_anchors(REFERENCE, sampling.patch_size).to(self.device)
        self.steps_per_epoch = max(1, math.ceil(sampling.train_patches / sampling.per_scanner))

        torch.manual_seed(cfg.seed)
        self.recipe = cfg.objective
        # The detector config validation and the checkpoint use: the reference's, or with
        # --no-standardize the unit normalisation the weak baseline trains with.
        self.det_config = REFERENCE if cfg.standardize else dataclasses.replace(REFERENCE, **UNIT_NORMALISATION)
        self.model = RetinaNetDA(REFERENCE, detach_laterals=self.recipe.detach_laterals)
        self.backbone = init_from(self.model, cfg.init) if cfg.init else init_backbone(self.model, cfg.backbone)
        self.model.to(self.device)
        # Decoupled weight decay on every parameter (BatchNorm too), as fastai's true_wd/bn_wd.
        optim = cfg.optim
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=optim.max_lr, betas=optim.betas, weight_decay=optim.weight_decay)
        self.sched = OneCycle(optim.epochs * self.steps_per_epoch, optim)
        self.step = 0  # optimiser steps done
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp == "fp16")
        self.epoch = 0  # epochs finished
        self.rows: list[dict[str, Any]] = []
        self.best: dict[str, Any] | None = None
        self.data_meta = {
            "annotations": str(data.annotations),
            "annotations_sha256": self.data.fingerprint,
            "split_sha256": split_fingerprint(self.split),
            "scanners": self.data.scanners,
            "unlabeled": self.data.unlabeled,
            "images": {s: sorted(r.file_name for r in self.parts[s]) for s in ("train", "valid", "test")},
        }
        write_text_atomic(self.out / "split.json", json.dumps(self.split, indent=1, sort_keys=True) + "\n")

    # -- checkpoints ---------------------------------------------------------

    def meta(self, row: dict[str, Any]) -> dict[str, Any]:
        return json.loads(json.dumps({
            "threshold": row.get("threshold", REFERENCE.threshold),
            "normalisation": {"mean": list(self.det_config.mean), "std": list(self.det_config.std), "scale": "pixel / 255"},
            "config": self.det_config.to_dict(),
            "train": self.cfg.to_dict(),
            "recipe": self.recipe.to_dict(),
            "backbone_init": self.backbone,
            "data": self.data_meta,
            "code_version": code_version(),
            "epoch": row["epoch"],
            "metrics": row,
            "selection": self.cfg.select,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }))

    def state(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "opt": self.opt.state_dict(),
            "step": self.step,
            "scaler": self.scaler.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "epoch": self.epoch,
            "rows": json.loads(json.dumps(self.rows)),
            "best": json.loads(json.dumps(self.best)),
            "fingerprint": self.fingerprint(),
        }

    def fingerprint(self) -> dict[str, Any]:
        """What must not change between a run and its resumption: everything that shapes the
        training steps (validation settings and the machine may change)."""
        cfg = self.cfg
        sampling = {k: v for k, v in asdict(cfg.sampling).items() if k != "val_patches"}
        # Standardisation only when off: runs saved before the option existed still resume.
        return json.loads(json.dumps({
            "data": self.data_meta["annotations_sha256"], "split": self.data_meta["split_sha256"],
            "sampling": sampling, "optim": asdict(cfg.optim), "recipe": self.recipe.to_dict(),
            "augment": asdict(cfg.augment), "seed": cfg.seed, "select": cfg.select,
            **({} if cfg.standardize else {"standardize": False}),
        }))

    def legacy_fingerprint(self) -> dict[str, Any] | None:
        """The fingerprint as `last.pt` files written before the per-concern configuration
        recorded it, or None when this run changes a setting those versions fixed."""
        cfg, r, s = self.cfg, self.recipe, self.cfg.sampling
        o, ro = OptimConfig(), Recipe()
        if ((cfg.optim.div_factor, cfg.optim.final_div, cfg.optim.moms) != (o.div_factor, o.final_div, o.moms)
                or (r.match_fg_iou, r.match_bg_iou, r.focal_gamma, r.focal_alpha)
                != (ro.match_fg_iou, ro.match_bg_iou, ro.focal_gamma, ro.focal_alpha)
                or dataclasses.replace(cfg.augment, enabled=True) != AugmentConfig() or not cfg.standardize):
            return None
        switches = ("detach_laterals", "detach_focal_weights", "normalise", "domain_focal")
        base = r.name.split("+")[0]
        custom = any(getattr(r, k) != getattr(make_recipe(base), k) for k in switches)
        return json.loads(json.dumps({
            "data": self.data_meta["annotations_sha256"], "split": self.data_meta["split_sha256"],
            "recipe": {"name": base + "+custom" * custom, **{k: getattr(r, k) for k in switches}},
            "patch_size": s.patch_size, "per_scanner": s.per_scanner, "train_patches": s.train_patches,
            "epochs": cfg.optim.epochs, "max_lr": cfg.optim.max_lr, "seed": cfg.seed,
            "domain_weight": r.domain_weight, "select": cfg.select,
        }))

    def load(self, path: Path) -> None:
        state = torch.load(path, map_location="cpu", weights_only=True)
        saved = state["fingerprint"]
        expected = self.fingerprint() if "sampling" in saved else self.legacy_fingerprint()
        if expected is None:
            raise MidogError(f"{path}: cannot resume, written by an older version that fixed settings this run changes")
        if saved != expected:
            diff = {k: (v, expected.get(k)) for k, v in saved.items() if expected.get(k) != v}
            raise MidogError(f"{path}: cannot resume, the run's data or settings differ: {diff}")
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["opt"])
        self.step = int(state["step"])
        self.scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["torch_rng"])
        self.epoch, self.rows, self.best = state["epoch"], state["rows"], state["best"]

    # -- one epoch -------------------------------------------------------------

    def batch_loss(self, patches: list, rng: np.random.Generator, augment: bool, alpha: float):
        from .losses import total_loss

        b = make_batch(patches, self.anchors, self.cfg.sampling.patch_size, rng, self.cfg.augment if augment else None, self.recipe, self.det_config)
        with autocast(self.device, self.amp):
            if self.recipe.domain_weight > 0:
                logits, deltas, dom = self.model.forward_train(b.x, alpha)
            else:
                (logits, deltas), dom = self.model(b.x), None
        return total_loss(logits, deltas, dom, b.matches, b.targets, b.domains, b.labelled, self.recipe)

    def train_epoch(self) -> dict[str, float]:
        from tqdm import tqdm

        cfg, epoch = self.cfg, self.epoch
        rng = np.random.default_rng([cfg.seed, epoch, 1])
        torch.manual_seed(cfg.seed * 100003 + epoch)
        alpha = grl_alpha(epoch, cfg.optim.epochs)
        self.model.train()
        sums = np.zeros(3)
        bar = tqdm(range(self.steps_per_epoch), desc=f"epoch {epoch + 1}/{cfg.optim.epochs}", unit="batch", disable=not cfg.progress, leave=False)
        for _ in bar:
            parts = self.batch_loss(self.train_sampler.batch(rng), rng, cfg.augment.enabled, alpha)
            self.opt.zero_grad(set_to_none=True)
            self.scaler.scale(parts.total).backward()
            self.sched.apply(self.opt, self.step)
            self.scaler.step(self.opt)
            self.scaler.update()
            self.step += 1
            sums += [parts.total.item(), parts.detection.item(), parts.domain.item()]
            bar.set_postfix(loss=f"{parts.total.item():.3f}", det=f"{parts.detection.item():.3f}", dom=f"{parts.domain.item():.3f}")
        n = self.steps_per_epoch
        return {"alpha": alpha, "lr": self.opt.param_groups[0]["lr"], "train_loss": sums[0] / n, "train_det": sums[1] / n, "train_dom": sums[2] / n}

    @torch.no_grad()
    def validate(self) -> dict[str, Any]:
        from .validate import evaluate_images

        cfg = self.cfg
        self.model.eval()
        out: dict[str, Any] = {}
        # Fixed patches every epoch (same seed), so the losses are comparable over epochs.
        rng = np.random.default_rng([cfg.seed, 2**31 - 1])
        n_batches = math.ceil(cfg.sampling.val_patches / cfg.sampling.per_scanner) if self.val_sampler.domains else 0
        det = dom = 0.0
        for _ in range(n_batches):
            patches = self.val_sampler.batch(rng)
            parts = self.batch_loss(patches, rng, False, 0.0)
            det, dom = det + parts.detection.item(), dom + parts.domain.item()
        if n_batches:
            out["val_det"], out["val_dom"] = det / n_batches, dom / n_batches
        labelled = [r for r in self.parts["valid"] if r.labelled]
        if labelled:
            m = evaluate_images(self.model, labelled, self.det_config, cfg.val_min_score)
            out.update(aucpr=m.aucpr, f1=m.f1, mean_f1=m.mean_f1, threshold=m.threshold)
            for sc, v in m.per_scanner.items():
                out[f"aucpr[{sc}]"], out[f"f1[{sc}]"] = v["aucpr"], v["f1"]
        return out

    def is_better(self, row: dict[str, Any]) -> bool:
        if self.best is None:
            return True
        if self.cfg.select == "loss":
            key = lambda r: -(r.get("val_det", math.inf) - r.get("val_dom", 0.0))  # noqa: E731
        else:
            key = lambda r: (round(r.get("aucpr", -1.0), 3), r.get("val_dom", 0.0))  # noqa: E731
        return key(row) > key(self.best)

    # -- logs --------------------------------------------------------------------

    def write_logs(self) -> None:
        cols: list[str] = []
        for row in self.rows:
            cols += [k for k in row if k not in cols]
        with atomic_path(self.out / "log.csv") as tmp, open(tmp, "w", newline="") as fh:
            w = csv.DictWriter(fh, cols)
            w.writeheader()
            w.writerows(self.rows)
        try:
            plot_log(self.rows, self.out / "curves.png")
        except Exception as exc:  # a plot must never stop training
            log.warning("warning: plot failed: %s", exc)

    # -- the run -------------------------------------------------------------------

    def run(self, stop_after: int | None = None) -> dict[str, Any]:
        """Train until `cfg.optim.epochs` (or `stop_after` more epochs); returns the summary."""
        cfg = self.cfg
        epochs = cfg.optim.epochs
        done_now = 0
        while self.epoch < epochs and (stop_after is None or done_now < stop_after):
            t0 = time.perf_counter()
            row: dict[str, Any] = {"epoch": self.epoch + 1, "step": (self.epoch + 1) * self.steps_per_epoch}
            row.update(self.train_epoch())
            t_train = time.perf_counter() - t0
            row["patches_per_s"] = self.steps_per_epoch * cfg.sampling.per_scanner * len(self.train_sampler.domains) / t_train
            # Throughput is known before validation, which can be long (or fail): say it now.
            log.info("epoch %d: trained in %.1f s, %.1f patches/s, loss %.4g", row["epoch"], t_train, row["patches_per_s"], row["train_loss"])
            last = self.epoch + 1 == epochs
            if (self.epoch + 1) % cfg.val_every == 0 or last:
                row.update(self.validate())
            row["seconds"] = time.perf_counter() - t0
            self.epoch += 1
            self.rows.append(row)
            if "aucpr" in row or ("val_det" in row and cfg.select == "loss"):
                if self.is_better(row):
                    self.best = row
                    atomic_save({"model": self.model.state_dict(), "meta": self.meta(row)}, self.out / "best.pth")
            atomic_save(self.state(), self.out / "last.pt")
            self.write_logs()
            done_now += 1
            msg = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items() if "[" not in k)
            log.info("%s", msg)
        summary = {"epochs_done": self.epoch, "epochs": epochs, "best": self.best, "out_dir": str(self.out)}
        write_text_atomic(self.out / "summary.json", json.dumps(summary, indent=1) + "\n")
        self.store.close()
        return summary


def train(cfg: RunConfig, resume: bool = False, stop_after: int | None = None) -> dict[str, Any]:
    """Train (or continue from `out_dir/last.pt` with `resume`); returns the summary."""
    threads = torch.get_num_threads()  # cfg.threads holds for this run only: it changes float sums
    try:
        trainer = Trainer(cfg)
        last = trainer.out / "last.pt"
        if resume:
            if not last.is_file():
                raise MidogError(f"{last}: nothing to resume")
            trainer.load(last)
        elif last.is_file():
            raise MidogError(f"{trainer.out} already holds a run; pass --resume to continue it or choose another folder")
        return trainer.run(stop_after)
    finally:
        torch.set_num_threads(threads)
