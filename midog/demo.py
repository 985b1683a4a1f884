"""`midog demo`: the main job, start to finish, on the bundled example.

With network access it fetches the published reference weights, the reference test
image 007.tiff and its expected outputs (each verified by git blob hash), runs detection
and reports whether the points equal the reference's expected output exactly.

Offline it says what it could not fetch, then falls back to the SYNTHETIC-DATA DEMO
model shipped in `weights/demo-synthetic.pth` (trained on `midog synth` images only, not
for real slides) on freshly generated synthetic images, scores it by the official metric,
and still exits non-zero, since the published model was not run.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .errors import MidogError

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEMO_WEIGHTS = PROJECT_ROOT / "weights" / "demo-synthetic.pth"
DEMO_SEED = 2021  # not a seed the demo model was trained on


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_published(output: Path, device: str) -> bool:
    """Detect on 007.tiff with the published weights; True when both styles match exactly."""
    from .detect import Detector
    from .output import write_json_atomic

    detector = Detector(PROJECT_ROOT / "weights" / "RetinaNetDA.pth", device)
    image = PROJECT_ROOT / "test" / "007.tiff"
    all_equal = True
    for style, expected_file in (("2021", "expected_output.json"), ("2022", "expected_output_2022.json")):
        result = detector.points_json(image, style)
        target = write_json_atomic(output / f"007.{style}.json", result)
        expected = json.loads((PROJECT_ROOT / "test" / expected_file).read_text())
        equal = result == expected
        all_equal &= equal
        verdict = "PASS: identical to" if equal else "FAIL: differs from"
        say(f"{style} style: {len(result['points'])} points -> {target}; {verdict} the reference's test/{expected_file}")
    return all_equal


def run_synthetic(output: Path, device: str) -> None:
    from .cli import main as cli_main
    from .synth import make_dataset

    if not DEMO_WEIGHTS.is_file():
        raise MidogError(f"{DEMO_WEIGHTS}: the synthetic-data demo model is missing from this checkout")
    say("")
    say("=" * 78)
    say("SYNTHETIC-DATA DEMO: the model in weights/demo-synthetic.pth was trained on")
    say("`midog synth` images only. It shows the pipeline working; it is not for real slides.")
    say("=" * 78)
    data = output / "synthetic-data"
    make_dataset(data, seed=DEMO_SEED, images_per_scanner=1, size=(1024, 1024))
    images = sorted(str(p) for p in data.glob("*.tiff"))
    predictions = output / "synthetic-predictions"
    predictions.mkdir(parents=True, exist_ok=True)
    code = cli_main(["detect", *images, "--weights", str(DEMO_WEIGHTS), "-o", str(predictions), "--style", "2022", "--device", device])
    if code:
        raise MidogError("detection on the synthetic images failed")
    report = output / "synthetic-evaluation"
    code = cli_main(
        ["evaluate", "--predictions", str(predictions), "--ground-truth", str(data / "ground_truth.json"),
         "--domains", str(data / "domains.json"), "--output", str(report), "--bootstrap", "200"]
    )
    if code:
        raise MidogError("evaluation of the synthetic demo failed")
    say((report / "table.md").read_text())
    say(f"Full report: {report / 'report.md'}")


def run_demo(output: Path, device: str = "auto", offline: bool = False) -> int:
    from .fetch import fetch_all

    output.mkdir(parents=True, exist_ok=True)
    try:
        if offline:
            raise MidogError("--offline given: not fetching the published artefacts")
        fetch_all(progress=True)
    except MidogError as exc:
        say(f"midog demo: could not get the published reference artefacts: {exc}")
        run_synthetic(output, device)
        say("midog demo: the published reference model was NOT run (see above); exiting with status 2.")
        return 2
    return 0 if run_published(output, device) else 1


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("demo", help="fetch the published model and reproduce the reference test (synthetic fallback offline)")
    p.add_argument("--output", "-o", type=Path, default=Path("output") / "demo")
    p.add_argument("--device", default="auto")
    p.add_argument("--offline", action="store_true", help="skip fetching; run the synthetic-data demo")
    p.set_defaults(run=lambda a: run_demo(a.output, a.device, a.offline))
