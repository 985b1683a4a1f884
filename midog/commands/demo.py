"""`midog demo`: the main job, start to finish, on the bundled example.

With network access it fetches the published reference weights, the reference test
image 007.tiff and its expected outputs (each verified by git blob hash, into the folder
`midog fetch` uses), runs detection and reports whether the points equal the reference's
expected output exactly (exit 0 when they do, 1 when not).

Offline it says what it could not fetch, then runs what the machine allows: the
SYNTHETIC-DATA DEMO model shipped with the package (trained on `midog synth` images only,
not for real slides) on freshly generated synthetic images, scored by the official
metric, under a banner saying so; exit 0. `--require-published` instead exits 2 whenever
the published model could not be run, for scripts that need exactly that.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from ..errors import MidogError
from ..detector.weights import artefact_file, packaged_file, published_weights

DEMO_WEIGHTS = packaged_file("demo-synthetic.pth")
DEMO_SEED = 2021  # not a seed the demo model was trained on


log = logging.getLogger(__name__)


def _log_flags() -> list[str]:
    """The demo's own --quiet/--verbose, passed on to the commands it runs."""
    level = logging.getLogger("midog").getEffectiveLevel()
    return ["--quiet"] if level >= logging.WARNING else ["--verbose"] if level <= logging.DEBUG else []


def run_published(output: Path, device: str) -> bool:
    """Detect on 007.tiff with the published weights; True when both styles match exactly."""
    from ..atomic import write_json_atomic
    from ..detector import Detector
    from ..results.challenge import min_score_for, multiple_points

    detector = Detector.from_weights(published_weights(), device)
    image = artefact_file("test/007.tiff")
    all_equal = True
    for style, expected_file in (("2021", "expected_output.json"), ("2022", "expected_output_2022.json")):
        found = detector.detect(image, min_score=min_score_for(style, detector.threshold, detector.candidate_threshold))
        result = multiple_points(found, style)
        target = write_json_atomic(output / f"007.{style}.json", result)
        expected = json.loads(artefact_file(f"test/{expected_file}").read_text())
        equal = result == expected
        all_equal &= equal
        verdict = "PASS: identical to" if equal else "FAIL: differs from"
        log.info("%s style: %d points -> %s; %s the reference's test/%s", style, len(result["points"]), target, verdict, expected_file)
    return all_equal


def run_synthetic(output: Path, device: str) -> None:
    from .cli import main as cli_main
    from ..synth import make_dataset

    if not DEMO_WEIGHTS.is_file():
        raise MidogError(f"{DEMO_WEIGHTS}: the synthetic-data demo model is missing from this installation")
    rule = "=" * 78
    # A warning so that --quiet keeps it: these numbers must never pass for the real model's.
    log.warning("\n%s\nSYNTHETIC-DATA DEMO: the model %s was trained on `midog synth`\n"
                "images only. It shows the pipeline working; it is not for real slides.\n%s", rule, DEMO_WEIGHTS.name, rule)
    data = output / "synthetic-data"
    make_dataset(data, seed=DEMO_SEED, images_per_scanner=1, size=(1024, 1024))
    images = sorted(str(p) for p in data.glob("*.tiff"))
    predictions = output / "synthetic-predictions"
    predictions.mkdir(parents=True, exist_ok=True)
    code = cli_main(["detect", *images, "--weights", str(DEMO_WEIGHTS), "-o", str(predictions), "--style", "2022", "--device", device, *_log_flags()])
    if code:
        raise MidogError("detection on the synthetic images failed")
    report = output / "synthetic-evaluation"
    code = cli_main(
        ["evaluate", "--predictions", str(predictions), "--ground-truth", str(data / "ground_truth.json"),
         "--domains", str(data / "domains.json"), "--output", str(report), "--bootstrap", "200", *_log_flags()]
    )
    if code:
        raise MidogError("evaluation of the synthetic demo failed")
    log.info("%s", (report / "table.md").read_text())
    log.info("Full report: %s", report / "report.md")


def run_demo(output: Path, device: str = "auto", offline: bool = False, require_published: bool = False) -> int:
    """0: the published model reproduced the reference, or (offline) the synthetic demo ran;
    1: the published model ran but differs; 2: with `require_published`, it could not run."""
    from ..detector.weights import fetch_all

    output.mkdir(parents=True, exist_ok=True)
    try:
        if offline:
            raise MidogError("--offline given: not fetching the published artefacts")
        fetch_all(progress=_log_flags() != ["--quiet"])
    except MidogError as exc:
        log.warning("midog demo: could not get the published reference artefacts: %s", exc)
        if require_published:
            log.error("midog demo: the published reference model was NOT run; --require-published: exiting with status 2.")
            return 2
        run_synthetic(output, device)
        log.warning("midog demo: the published reference model was NOT run (offline); the synthetic-data demo above\n"
                    "ran instead. Run `midog fetch` with network access, or `midog demo --require-published` to fail here.")
        return 0
    return 0 if run_published(output, device) else 1


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("demo", help="fetch the published model and reproduce the reference test (synthetic fallback offline)")
    p.add_argument("--output", "-o", type=Path, default=Path("output") / "demo")
    p.add_argument("--device", default="auto")
    p.add_argument("--offline", action="store_true", help="skip fetching; run the synthetic-data demo")
    p.add_argument(
        "--require-published",
        action="store_true",
        help="exit 2, without the synthetic fallback, when the published model cannot be fetched and run",
    )
    p.set_defaults(run=lambda a: run_demo(a.output, a.device, a.offline, a.require_published))
