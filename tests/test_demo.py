"""The README's main job: offline, `midog demo` names what it could not run, falls back to
the labelled synthetic-data demo, scores it, and still exits non-zero."""

from __future__ import annotations

import json

from midog.cli import main


def test_offline_demo_runs_the_labelled_synthetic_fallback(tmp_path, capsys):
    code = main(["demo", "--offline", "-o", str(tmp_path), "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2
    assert "SYNTHETIC-DATA DEMO" in err and "published reference model was NOT run" in err
    metrics = json.loads((tmp_path / "synthetic-evaluation" / "metrics.json").read_text())
    # The shipped demo model finds most synthetic mitoses; a broken pipeline would not.
    assert metrics["aggregates"]["f1_score"] > 0.6
    assert len(list((tmp_path / "synthetic-predictions").glob("*.json"))) == 4
