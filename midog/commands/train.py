"""`midog train`: reproduce the reference's weights by domain-adversarial training."""

from __future__ import annotations

import argparse
import json
import logging
import textwrap
import time
from pathlib import Path

from ..config import RECIPES, RunConfig, run_config_from
from .args import add_config_arguments

log = logging.getLogger(__name__)

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
    groups = {
        "data": p.add_argument_group("data and split"),
        "sampling": p.add_argument_group("patches"),
        "optim": p.add_argument_group("optimisation and schedule"),
        "objective": p.add_argument_group(
            "recipe",
            "How the objective is computed. 'reference' (default) is the reference's, exactly: its targets, "
            "per-patch loss normalisation, batch-mean domain focal loss divided by the batch size, detached "
            "FPN laterals and focal weights. 'improved' changes all four; each flag below changes one field "
            "of the chosen recipe (defaults: the reference recipe's).",
        ),
        "augment": p.add_argument_group("augmentation"),
    }
    groups["objective"].add_argument("--recipe", choices=list(RECIPES), default="reference")
    run = p.add_argument_group("run")
    add_config_arguments(run, RunConfig, groups)
    run.add_argument("--resume", action="store_true", help="continue the run in --out from its last.pt")
    run.add_argument("--stop-after", type=int, default=None, metavar="N", help="stop after N epochs of this invocation (resume later)")
    run.add_argument("--export-half", type=Path, default=None, metavar="FILE", help="at the end, write best.pth as a float16 inference file")
    p.set_defaults(run=_run)


def config_from_args(args: argparse.Namespace) -> RunConfig:
    """The run's configuration from `midog train`'s parsed options."""
    return run_config_from(args)


def _run(args: argparse.Namespace) -> int:
    from ..training.checkpoints import export_weights
    from ..training.loop import train

    cfg = config_from_args(args)
    from ..training.checks import check_training_data

    check_training_data(cfg.data)  # before the model is built: missing data is found in seconds
    t0 = time.perf_counter()
    summary = train(cfg, resume=args.resume, stop_after=args.stop_after)
    best = summary["best"] or {}
    log.info(
        "%d/%d epochs in %.0f s; best epoch %s: AUCPR %.3f, F1 %.3f at threshold %s -> %s",
        summary["epochs_done"], summary["epochs"], time.perf_counter() - t0, best.get("epoch"),
        best.get("aucpr", float("nan")), best.get("f1", float("nan")), best.get("threshold"), Path(cfg.out_dir) / "best.pth",
    )
    if args.export_half and summary["epochs_done"] == summary["epochs"] and (Path(cfg.out_dir) / "best.pth").is_file():
        dst = export_weights(Path(cfg.out_dir) / "best.pth", args.export_half)
        log.info("float16 inference weights: %s (%.1f MB)", dst, dst.stat().st_size / 1e6)
    print(json.dumps({k: summary[k] for k in ("epochs_done", "epochs", "out_dir")}))
    return 0
