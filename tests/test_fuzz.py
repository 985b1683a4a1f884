"""The readers of user files against fuzzing (benchmarks/fuzz.py, docs/fuzzing.md).

Every file in tests/fuzz_regressions/ is an input the fuzzer once found to break the outcome
rule (returns, or raises MidogError naming the file), named `<target>--<what it raised where>`;
each is replayed through its target and must now keep the rule. The smoke runs the fuzzer
itself over every target in one process, with a fixed seed, for about 50 s (startup included).
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
REGRESSIONS = sorted((ROOT / "tests" / "fuzz_regressions").iterdir())
sys.path.insert(0, str(ROOT / "benchmarks"))
fuzz_targets = importlib.import_module("fuzz_targets")


@pytest.fixture(autouse=True)
def _loud_again():
    """quiet() silences logging and warnings process-wide, for the fuzzer's own processes;
    here, the tests after these must see the messages again."""
    with __import__("warnings").catch_warnings():
        yield
    import logging

    logging.disable(logging.NOTSET)


# A memory finding kept the outcome rule but cost over a gigabyte on the way; its replay must
# stay well under the fuzzer's 2 GB limit, beyond what the process already held.
MEMORY_GROWTH_MB = 512


def _resident_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def _check_in_child(target: str, data: bytes) -> tuple[str | None, float]:
    """Run one check in a forked child: (its outcome, its peak resident MB over the parent's)."""
    read, write = os.pipe()
    before = _resident_mb()
    pid = os.fork()
    if pid == 0:  # the child: report and leave without running the parent's cleanup
        try:
            outcome = fuzz_targets.check(target, data) or ""
        except BaseException as exc:  # noqa: BLE001 - any escape is the finding itself
            outcome = f"escaped: {exc!r}"
        os.write(write, outcome.encode()[:4000])
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        outcome = pipe.read().decode()
    _, _, usage = os.wait4(pid, 0)
    return outcome or None, usage.ru_maxrss / 1024 - before


@pytest.mark.parametrize("path", REGRESSIONS, ids=[p.name for p in REGRESSIONS])
def test_regression_keeps_the_outcome_rule(path: Path) -> None:
    target, what = path.name.split("--", 1)
    fuzz_targets.quiet()
    started = time.monotonic()
    if what.startswith("memory-"):
        if not Path("/proc/self/status").is_file() or not hasattr(os, "fork"):
            pytest.skip("measuring a child's memory needs Linux's /proc and fork")
        outcome, grew_mb = _check_in_child(target, path.read_bytes())
        assert outcome is None
        assert grew_mb < MEMORY_GROWTH_MB, f"the replay held {grew_mb:.0f} MB more than the test process"
    else:
        assert fuzz_targets.check(target, path.read_bytes()) is None
    assert time.monotonic() - started < 10, "over the fuzzer's hang limit"


def test_every_target_has_regressions_or_seeds_that_keep_the_rule(tmp_path: Path) -> None:
    """The seeds are valid files: each must pass the rule (and most of them simply read)."""
    fuzz_targets.quiet()
    for name, target in fuzz_targets.TARGETS.items():
        for kind, content in target.seeds():
            assert fuzz_targets.check(name, target.encode(kind, content), tmp_path) is None, name


def test_check_reports_a_crash_and_an_unnamed_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """The rule can fail: a stray exception and a MidogError that does not name the file."""
    from midog.errors import MidogError

    target = fuzz_targets.TARGETS["result"]

    def crash(path: Path, kind: int) -> None:
        raise KeyError("boom")

    def unnamed(path: Path, kind: int) -> None:
        raise MidogError("something is wrong")

    monkeypatch.setitem(fuzz_targets.TARGETS, "result", target.__class__(**{**target.__dict__, "run": crash}))
    assert fuzz_targets.check("result", b"{}").startswith("KeyError: 'boom' at")
    monkeypatch.setitem(fuzz_targets.TARGETS, "result", target.__class__(**{**target.__dict__, "run": unnamed}))
    assert "without the file's name" in fuzz_targets.check("result", b"{}")


def test_fuzz_smoke(tmp_path: Path) -> None:
    """About 50 s of coverage-guided fuzzing over all targets, fixed seed: no finding."""
    pytest.importorskip("atheris", reason="atheris is not installed (requirements-dev.txt)")
    out = tmp_path / "fuzz.json"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "fuzz.py"), "--seconds", "50", "--target", "all", "--seed", "1", "--json", str(out)],
        env=env, capture_output=True, text=True, timeout=240,
    )
    assert out.is_file(), proc.stdout + proc.stderr
    [result] = json.loads(out.read_text())
    assert result["execs"] > 100 and result["cov"] > 100, result
    assert result["findings"] == [], proc.stdout
    assert proc.returncode == 0, proc.stdout
