"""The README's main job: offline, `midog demo` names what it could not run, falls back to
the labelled synthetic-data demo, scores it and exits 0 (it ran what the machine allows);
`--require-published` exits 2 instead, for scripts that need the published model."""

from __future__ import annotations

import json

from midog.commands.cli import main
from midog.commands.demo import DEMO_WEIGHTS


def test_offline_demo_runs_the_labelled_synthetic_fallback(tmp_path, capsys):
    code = main(["demo", "--offline", "-o", str(tmp_path), "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "SYNTHETIC-DATA DEMO" in err and "published reference model was NOT run" in err
    assert "--require-published" in err  # tells scripts how to get a failing status instead
    metrics = json.loads((tmp_path / "synthetic-evaluation" / "metrics.json").read_text())
    # The shipped demo model finds most synthetic mitoses; a broken pipeline would not.
    assert metrics["aggregates"]["f1_score"] > 0.6
    assert len(list((tmp_path / "synthetic-predictions").glob("*.json"))) == 4


def test_require_published_exits_2_without_the_fallback(tmp_path, capsys):
    code = main(["demo", "--offline", "--require-published", "-o", str(tmp_path), "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2
    assert "published reference model was NOT run" in err and "SYNTHETIC-DATA DEMO" not in err
    assert not (tmp_path / "synthetic-predictions").exists()


def test_demo_weights_ship_with_the_package():
    # The checkout's weights/ folder is installed as the package data folder midog/weights/.
    assert DEMO_WEIGHTS.is_file() and DEMO_WEIGHTS.stat().st_size > 1_000_000
