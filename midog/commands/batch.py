"""`midog batch INPUT... --output DIR`: a cohort on Ray workers, resumable, one report."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..detector.weights import published_weights
from ..pipeline.batch import require_ray, run_batch
from .args import add_detection_args, positive, positive_int, run_settings


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "batch",
        help="detect on many images with Ray workers (local or a cluster); resumable",
        description=(
            "Detect mitotic figures on many images with Ray: each worker keeps one detector loaded and "
            "writes DIR/<image stem>.json, byte for byte what `midog detect` writes. DIR/batch-report.json "
            "(and .csv) records every image as ok, failed or skipped; a rerun skips images already finished "
            "with the same input, weights and options. Inputs and DIR must be paths every Ray node sees. "
            "Needs Ray: pip install \"midog[distributed]\"."
        ),
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders (searched recursively), globs, or .txt/.csv lists of paths")
    p.add_argument("--output", "-o", type=Path, required=True, metavar="DIR", help="folder for <image stem>.json, the report and fingerprints")
    p.add_argument("--workers", type=positive_int, default=None, metavar="N", help="Ray workers (default: one per GPU of the cluster, else one per node)")
    p.add_argument("--address", default=None, metavar="ADDR", help="join a running Ray cluster: auto, HOST:PORT or ray://HOST:PORT (default: start a local Ray)")
    p.add_argument("--gpus-per-worker", type=positive, default=None, metavar="F", help="GPUs per worker, fractions share a GPU (default: 1 when the cluster has GPUs, else 0)")
    p.add_argument(
        "--cpus-per-worker",
        type=positive_int,
        default=None,
        metavar="N",
        help="CPUs per worker, also its PyTorch threads (default: 1 with a GPU, else all of a node's, as midog detect uses, "
        "which keeps outputs byte-identical to it; fewer run faster with several workers per node, differing in the last float bit)",
    )
    p.add_argument("--force", action="store_true", help="redo every image, even those already finished")
    p.add_argument(
        "--dashboard", action="store_true",
        help="with a local Ray: start Ray's dashboard, on 127.0.0.1 only (default: off; a local Ray listens on 127.0.0.1 only)",
    )
    add_detection_args(p)
    p.set_defaults(run=_run)


def _run(a: argparse.Namespace) -> int:
    require_ray()  # before the run is settled: without Ray, nothing else matters
    run = run_settings(a, a.weights or published_weights())
    return run_batch(a.inputs, a.output, run, a.workers, a.address, a.gpus_per_worker, a.cpus_per_worker, a.force, a.progress, a.dashboard)
