"""`midog experiment`: the paper's comparison of a weak baseline, a strong baseline and
domain-adversarial training, per scanner on seen and unseen scanners, as one command."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import shlex
import sys
import time
from pathlib import Path

from ..config import RECIPES, RunConfig, run_config_from
from ..errors import MidogError
from ..training.experiment import MODELS, ExperimentConfig
from .args import add_config_arguments

log = logging.getLogger(__name__)
_DEFAULTS = {f.name: f.default for f in dataclasses.fields(ExperimentConfig) if f.default is not dataclasses.MISSING}


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "experiment",
        help="train weak, strong and domain-adversarial models and compare them per scanner (the paper's Table 1)",
        description=(
            "Train the paper's three models on the same data with the same budget (weak: no normalisation, no "
            "augmentation; strong: normalisation and augmentation, domain weight 0; da: the reference recipe), "
            "each resumable, choose each operating point on validation, detect the held-out images (the seeded test "
            "split plus every ground-truth image MIDOG.json does not list: unseen scanners) and write DIR/report.md "
            "with Table 1, bootstrap F1, F1 against threshold, UMAPs and training curves. The training options are "
            "`midog train`'s and apply to every model, except what the model definitions set (augmentation, "
            "standardisation, domain weight). Run the same command again to resume."
        ),
    )
    exp = p.add_argument_group("experiment")
    exp.add_argument("--models", default=",".join(MODELS), help=f"comma-separated subset of {','.join(MODELS)} (default: all)")
    exp.add_argument("--seeds", type=int, default=_DEFAULTS["seeds"], metavar="N", help="runs per model, seeds --seed, --seed + 1, ... (default 1)")
    exp.add_argument("--ground-truth", default=None, metavar="FILE", help="held-out ground truth, evaluator JSON (mm) or MIDOG.json (default: ground_truth.json beside MIDOG_JSON)")
    exp.add_argument("--domains", default=None, metavar="FILE", help="scanner of each held-out image (default: domains.json beside MIDOG_JSON, else its id ranges)")
    exp.add_argument("--bootstrap", type=int, default=_DEFAULTS["bootstrap"], metavar="N", help="bootstrap resamples (default %(default)s)")
    exp.add_argument("--plateau-tolerance", type=float, default=_DEFAULTS["plateau_tolerance"], metavar="D",
                     help="operating point: middle of the thresholds whose pooled validation F1 is within D of the best (default %(default)s)")
    exp.add_argument("--min-score", type=float, default=_DEFAULTS["min_score"], help="candidates kept in the held-out predictions (default %(default)s)")
    exp.add_argument("--umap-patches", type=int, default=_DEFAULTS["umap_patches"], metavar="N", help="random patches per held-out image for the UMAPs (default %(default)s)")
    exp.add_argument("--no-umap", action="store_true", help="skip the UMAPs")
    exp.add_argument("--arms", default=",".join(_DEFAULTS["arms"]), metavar="LIST",
                     help="adaptation arms per shifted scanner beside 'none': comma-separated subset of calibrate,adapt,finetune (default all)")
    exp.add_argument("--finetune-ks", default=",".join(map(str, _DEFAULTS["finetune_ks"])), metavar="LIST",
                     help="reviewed images per fine-tune arm, of 1,2,4 (default %(default)s)")
    exp.add_argument("--finetune-epochs", type=int, default=None, metavar="N", help="fine-tune arms' epochs (default: a quarter of --epochs, at least 1)")
    exp.add_argument("--finetune-lr", type=float, default=None, metavar="LR", help="fine-tune arms' max learning rate (default: a tenth of --max-lr)")
    groups = {k: p.add_argument_group(t) for k, t in (("data", "data and split"), ("sampling", "patches"), ("optim", "optimisation and schedule"), ("objective", "recipe"), ("augment", "augmentation"))}
    groups["objective"].add_argument("--recipe", choices=list(RECIPES), default="reference")
    add_config_arguments(p.add_argument_group("run (shared by every model)"), RunConfig, groups)
    p.set_defaults(run=_run)


def config_from_args(args: argparse.Namespace) -> ExperimentConfig:
    return ExperimentConfig(
        base=run_config_from(args),
        models=tuple(m.strip() for m in args.models.split(",") if m.strip()),
        seeds=args.seeds,
        ground_truth=args.ground_truth,
        domains=args.domains,
        min_score=args.min_score,
        plateau_tolerance=args.plateau_tolerance,
        bootstrap=args.bootstrap,
        umap_patches=args.umap_patches,
        umap=not args.no_umap,
        arms=tuple(a.strip() for a in args.arms.split(",") if a.strip()),
        finetune_ks=_ints(args.finetune_ks, "--finetune-ks"),
        finetune_epochs=args.finetune_epochs,
        finetune_lr=args.finetune_lr,
    )


def _ints(text: str, flag: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise MidogError(f"{flag}: expected comma-separated whole numbers, got {text!r}") from None


def _run(args: argparse.Namespace) -> int:
    from ..training.checks import check_training_data
    from ..atomic import write_text_atomic
    from ..training.experiment import model_config, run_experiment
    from ..training.experiment_arms import run_arms
    from ..training.experiment_report import write_report

    cfg = config_from_args(args)
    check_training_data(cfg.base.data)
    t0 = time.perf_counter()
    stage = lambda text: log.info("%s", text)  # noqa: E731
    result = run_experiment(cfg, on_stage=stage)
    report = write_report(result, Path(cfg.base.out_dir))  # before the arms: a report even if they fail
    if {"adapt", "finetune"} & set(cfg.arms):
        for r in result.results:
            run_arms(cfg, r, model_config(cfg.base, r.model, r.seed, r.run_dir), stage)
        report = write_report(result, Path(cfg.base.out_dir))
    write_text_atomic(Path(cfg.base.out_dir, "command.txt"), "midog " + " ".join(shlex.quote(a) for a in sys.argv[1:]) + "\n")
    rows = json.loads((report.parent / "results.json").read_text())["rows"]
    parts = [f"{key}: F1 {r['all scanners']['f1']:.3f}" if r["all scanners"]["f1"] is not None else f"{key}: F1 n/a" for key, r in rows.items()]
    print(f"{len(result.results)} models in {time.perf_counter() - t0:.0f} s; all scanners {'; '.join(parts)} -> {report}")
    return 0
