"""`midog train`: reproduce the reference's weights by domain-adversarial training."""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
import time
from pathlib import Path

from ..config import TrainConfig

_T = TrainConfig()

# What the demo trainings found about the reference's domain weight (weights/demo-results.md).
DOMAIN_WEIGHT_NOTE = (
    "WARNING, domain weight: earlier demo trainings from random initialisation collapsed at "
    "--domain-weight 1.0, the reference's value. They used a per-sample domain focal loss (now "
    "--domain-focal per_sample, part of --recipe improved), about batch-size times stronger than "
    "the reference's. With the reference recipe, the default, weight 1.0 trained the synthetic demo "
    "from random initialisation without collapse (max LR 1e-3, 15 short epochs); with the per-sample "
    "loss, use about 1/batch size (0.1 worked). Watch the validation AUCPR in log.csv either way."
)



def _paragraphs(*texts: str) -> str:
    """Wrapped paragraphs: argparse's raw formatter keeps the blank line before the warning."""
    return "\n\n".join(textwrap.fill(t, 88) for t in texts)


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train",
        help="train the domain-adversarial RetinaNet on MIDOG-layout data",
        description=_paragraphs(
            "Train on MIDOG.json plus its TIFFs (the recipe is described in docs/reference-algorithm.md#training-recipe); "
            "defaults are the reference's values and its exact training objective (--recipe reference). "
            "The run folder gets last.pt (resume with --resume), best.pth (loads in `midog detect --weights`, "
            "its threshold is the best mean validation F1), log.csv and curves.png. Model selection: "
            "--select aucpr (paper: best mean validation AUCPR, ties to the higher domain loss) or "
            "loss (reference code: lowest validation detection minus domain loss).",
            DOMAIN_WEIGHT_NOTE,
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("annotations", type=Path, metavar="MIDOG_JSON", help="MIDOG.json (bbox x1,y1,x2,y2)")
    p.add_argument("--out", "-o", type=Path, required=True, help="run folder (checkpoints, logs)")
    p.add_argument("--images", type=Path, default=None, help="folder of the TIFFs (default: beside MIDOG_JSON)")
    p.add_argument("--coco-xywh", action="store_true", help="annotations are plain COCO bbox x,y,w,h")
    p.add_argument("--scanners", type=Path, default=None, help="scanner id ranges JSON (default: scanners.json beside MIDOG_JSON, else MIDOG 2021's)")
    p.add_argument("--unlabeled", default=None, help="name of the unlabelled scanner (default: Leica GT450 / scanners.json's)")
    g = p.add_argument_group("split")
    g.add_argument("--split", type=Path, default=None, help="reference split file (train_val_split.txt format)")
    g.add_argument("--val-per-scanner", type=int, default=None, help="seeded split: validation images per scanner (default 1/5)")
    g.add_argument("--test-per-scanner", type=int, default=0, help="seeded split: held-out test images per scanner (default 0)")
    g = p.add_argument_group("schedule")
    g.add_argument("--epochs", type=int, default=_T.epochs)
    g.add_argument("--patch-size", type=int, default=_T.patch_size)
    g.add_argument("--per-scanner", type=int, default=_T.patches_per_scanner_in_batch, help="patches per scanner in a batch")
    g.add_argument("--train-patches", type=int, default=_T.train_patches_per_scanner, help="training patches per scanner per epoch")
    g.add_argument("--val-patches", type=int, default=_T.val_patches_per_scanner, help="validation patches per scanner per epoch")
    g.add_argument("--max-lr", type=float, default=_T.max_lr)
    g.add_argument("--weight-decay", type=float, default=_T.weight_decay)
    g.add_argument("--domain-weight", type=float, default=_T.domain_weight, help="0 turns domain adaptation off")
    g.add_argument("--positive-fraction", type=float, default=_T.positive_fraction)
    g.add_argument("--no-augment", dest="augment", action="store_false")
    g = p.add_argument_group(
        "recipe",
        "How the objective is computed. 'reference' (default) is the reference's, exactly: its targets, "
        "per-patch loss normalisation, batch-mean domain focal loss divided by the batch size, detached "
        "FPN laterals and focal weights. 'improved' changes all four; each flag below changes one.",
    )
    g.add_argument("--recipe", choices=["reference", "improved"], default="reference")
    g.add_argument("--detach-laterals", dest="detach_laterals", action="store_true", default=None,
                   help="no detection gradient through the FPN laterals (reference)")
    g.add_argument("--no-detach-laterals", dest="detach_laterals", action="store_false",
                   help="detection gradient through the FPN laterals (improved)")
    g.add_argument("--focal-weights", choices=["detached", "differentiated"], default=None,
                   help="focal modulating weights constant (reference) or differentiated (improved)")
    g.add_argument("--normalise", choices=["patch", "batch"], default=None,
                   help="class loss / each patch's positives, patches averaged (reference) or / the batch's positives (improved)")
    g.add_argument("--domain-focal", choices=["batch_mean", "per_sample"], default=None,
                   help="focal factor on the batch-mean cross-entropy, then / batch size (reference) "
                   "or per sample, averaged once (improved; about batch-size times stronger)")
    g.add_argument("--select", choices=["aucpr", "loss"], default="aucpr")
    g.add_argument("--val-every", type=int, default=1)
    g = p.add_argument_group("machine")
    g.add_argument("--backbone", default="imagenet", help="imagenet (torchvision download), a resnet18 state_dict file, or none")
    g.add_argument("--device", default="auto", help="auto, cpu, cuda[:N]")
    g.add_argument("--amp", default="off", choices=["off", "bf16", "fp16", "auto"], help="mixed precision (fp16 on CUDA, bf16 on CPU)")
    g.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    g.add_argument("--cache-images", type=int, default=16, help="images kept open at once")
    g.add_argument("--seed", type=int, default=_T.seed)
    g.add_argument("--resume", action="store_true", help="continue the run in --out from its last.pt")
    g.add_argument("--stop-after", type=int, default=None, metavar="N", help="stop after N epochs of this invocation (resume later)")
    g.add_argument("--export-half", type=Path, default=None, metavar="FILE", help="at the end, write best.pth as a float16 inference file")
    g.add_argument("--no-progress", dest="progress", action="store_false")
    p.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    from .loop import RunConfig, export_weights, train

    cfg = RunConfig(
        annotations=str(args.annotations), out_dir=str(args.out), images_dir=str(args.images) if args.images else None,
        box_format="xywh" if args.coco_xywh else "xyxy", scanners_file=str(args.scanners) if args.scanners else None,
        unlabeled=args.unlabeled, split_file=str(args.split) if args.split else None,
        val_per_scanner=args.val_per_scanner, test_per_scanner=args.test_per_scanner,
        patch_size=args.patch_size, per_scanner=args.per_scanner, train_patches=args.train_patches,
        val_patches=args.val_patches, epochs=args.epochs, max_lr=args.max_lr, weight_decay=args.weight_decay,
        domain_weight=args.domain_weight, positive_fraction=args.positive_fraction, augment=args.augment,
        recipe=args.recipe, detach_laterals=args.detach_laterals,
        detach_focal_weights=None if args.focal_weights is None else args.focal_weights == "detached",
        normalise=args.normalise, domain_focal=args.domain_focal, backbone=args.backbone, device=args.device, amp=args.amp,
        select=args.select, val_every=args.val_every, seed=args.seed, threads=args.threads,
        cache_images=args.cache_images, progress=args.progress,
    )
    from .checks import check_training_data

    check_training_data(cfg)  # before the model is built: missing data is found in seconds
    t0 = time.perf_counter()
    summary = train(cfg, resume=args.resume, stop_after=args.stop_after)
    best = summary["best"] or {}
    print(
        f"{summary['epochs_done']}/{summary['epochs']} epochs in {time.perf_counter() - t0:.0f} s; best epoch "
        f"{best.get('epoch')}: AUCPR {best.get('aucpr', float('nan')):.3f}, F1 {best.get('f1', float('nan')):.3f} "
        f"at threshold {best.get('threshold')} -> {Path(args.out) / 'best.pth'}",
        file=sys.stderr,
    )
    if args.export_half and summary["epochs_done"] == summary["epochs"] and (Path(args.out) / "best.pth").is_file():
        dst = export_weights(Path(args.out) / "best.pth", args.export_half)
        print(f"float16 inference weights: {dst} ({dst.stat().st_size / 1e6:.1f} MB)", file=sys.stderr)
    print(json.dumps({k: summary[k] for k in ("epochs_done", "epochs", "out_dir")}))
    return 0
