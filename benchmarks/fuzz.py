"""Coverage-guided fuzzing of every reader of user files (targets: benchmarks/fuzz_targets.py).

    python benchmarks/fuzz.py --minutes 60 [--target NAME ...] [--seed S] [--json OUT]
    python benchmarks/fuzz.py --seconds 40 --target all --seed 1     # the CI smoke

The engine is atheris (libFuzzer for Python): the midog package, tifffile and tiffslide are
instrumented, so inputs that reach new lines and branches of them are kept and mutated
further. Native decoders (imagecodecs, libtiff in openslide, ITK) run uninstrumented: they
are exercised by the inputs but do not guide the search. JSON targets add a structure-aware
mutator (a value of the document replaced by one of another type or an extreme) to
libFuzzer's byte mutations.

The time is split evenly over the targets; each runs in its own process, one at a time,
with a fresh seed corpus made by the project's generators. In that process a call that
raises anything but a MidogError naming the file is recorded as a crash and fuzzing goes
on; libFuzzer itself ends the process on a call over 10 s (a hang, -timeout) or on more
than 2 GB resident (a memory failure, -rss_limit_mb) and on a fatal signal in native code;
then the driver records that finding and starts the target again on the corpus so far,
for the rest of its time. Prints execs, coverage (libFuzzer's edge count `cov` and feature
count `ft`) and the findings per target; inputs of every finding are kept in
benchmarks/.cache/fuzz/<target>/findings/ (turn each into tests/fuzz_regressions/ with a fix).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CACHE = HERE / ".cache" / "fuzz"
HANG_S = 10
RSS_MB = 2048
MAX_LEN = 256 * 1024  # inputs larger than the largest seed (the pyramid, ~60 KB) by a margin

sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))


# ---------------------------------------------------------------------------
# The worker: one target under atheris, in its own process
# ---------------------------------------------------------------------------


def _mutate_json(value: object, rng: random.Random, depth: int = 0) -> object:
    """One structural change somewhere in a JSON document."""
    extremes = [None, True, 0, -1, 2**63, -(2**31), 1e308, -0.0, float("nan"), float("inf"), "", "x" * 300,
                "../../etc/passwd", "a\x00b", "<img src=x onerror=alert(1)>", [], {}, [[]], {"": None}]
    if isinstance(value, dict) and value and rng.random() < 0.8:
        key = rng.choice(list(value))
        choice = rng.random()
        if choice < 0.15:
            del value[key]
        elif choice < 0.25:
            value[key + "_"] = value[key]
        else:
            value[key] = _mutate_json(value[key], rng, depth + 1)
        return value
    if isinstance(value, list) and value and rng.random() < 0.8:
        i = rng.randrange(len(value))
        choice = rng.random()
        if choice < 0.15:
            del value[i]
        elif choice < 0.3:
            value.insert(i, value[i])
        else:
            value[i] = _mutate_json(value[i], rng, depth + 1)
        return value
    return rng.choice(extremes)


def worker(name: str, until: float, seed: int, corpus: Path, findings: Path, stats: Path) -> None:
    import atheris

    import fuzz_targets

    fuzz_targets.environment()
    with atheris.instrument_imports(include=["midog", "tifffile", "tiffslide"]):
        import midog.detector.weights  # noqa: F401
        import midog.evaluation.io  # noqa: F401
        import midog.pipeline.inputs  # noqa: F401
        import midog.results.reader  # noqa: F401
        import midog.results.sidecar  # noqa: F401
        import midog.slides.readers  # noqa: F401
        import midog.slides.tissue  # noqa: F401
        import tifffile  # noqa: F401
        import tiffslide  # noqa: F401
    fuzz_targets.quiet()
    names = list(fuzz_targets.TARGETS) if name == "all" else [name]
    if any(fuzz_targets.TARGETS[n].files == fuzz_targets.INPUTS_FILES or n == "manifest" for n in names):
        fuzz_targets.process_module()  # imports torch: before fuzzing starts, not in a timed call
    targets = [fuzz_targets.TARGETS[n] for n in names]
    scratch = Path(tempfile.mkdtemp(prefix=f"fuzz-{name}-"))
    seen: dict[str, int] = {}
    if stats.exists():
        seen = json.loads(stats.read_text()).get("crashes", {})

    def split(data: bytes) -> tuple[str, bytes]:
        if len(targets) == 1:
            return names[0], data
        return names[data[0] % len(names)] if data else names[0], data[1:]

    def one_input(data: bytes) -> None:
        target, payload = split(data)
        failure = fuzz_targets.check(target, payload, scratch)
        if failure is None:
            return
        key = f"{target}: {fuzz_targets.signature(failure)}"
        if key not in seen:
            digest = hashlib.sha1(data).hexdigest()[:12]
            (findings / f"crash-{target}-{digest}").write_bytes(payload)
            (findings / f"crash-{target}-{digest}.txt").write_text(failure + "\n")
            print(f"FINDING {key} :: {failure}", file=sys.stderr, flush=True)
        seen[key] = seen.get(key, 0) + 1
        stats.write_text(json.dumps({"crashes": seen}))

    def mutator(data: bytes, max_size: int, mseed: int) -> bytes:
        rng = random.Random(mseed)
        target, payload = split(data)
        if fuzz_targets.TARGETS[target].json_like and rng.random() < 0.5:
            head = len(data) - len(payload) + (1 if len(fuzz_targets.TARGETS[target].files) > 1 else 0)
            try:
                doc = json.loads(data[head:])
            except (ValueError, UnicodeDecodeError, RecursionError):
                pass
            else:
                out = data[:head] + json.dumps(_mutate_json(doc, rng)).encode()
                if len(out) <= max_size:
                    return out
        return atheris.Mutate(data, max_size)

    seconds = max(1, int(until - time.time()))  # the imports and instrumentation above count against the time
    args = [sys.argv[0], str(corpus), f"-max_total_time={seconds}", f"-seed={seed}", f"-timeout={HANG_S}",
            f"-rss_limit_mb={RSS_MB}", f"-malloc_limit_mb={RSS_MB}", f"-max_len={MAX_LEN}", f"-artifact_prefix={findings}/",
            "-print_final_stats=1", "-reload=0"]
    atheris.Setup(args, one_input, custom_mutator=mutator if any(t.json_like for t in targets) else None)
    atheris.Fuzz()


# ---------------------------------------------------------------------------
# The driver
# ---------------------------------------------------------------------------


STAT = re.compile(r"^#(\d+)\s+\w+\s+cov: (\d+) ft: (\d+)")
DONE = re.compile(r"^Done (\d+) runs in (\d+) second")


def run_target(name: str, seconds: float, seed: int, workdir: Path) -> dict:
    """Fuzz one target (or "all") for `seconds`, restarting after a hang, memory failure or fatal signal."""
    import fuzz_targets

    corpus, findings = workdir / "corpus", workdir / "findings"
    for d in (corpus, findings):
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
    stats = workdir / "crashes.json"
    stats.unlink(missing_ok=True)
    for n in (fuzz_targets.TARGETS if name == "all" else [name]):
        for i, path in enumerate(fuzz_targets.write_seeds(n, workdir / "seeds" / n)):
            data = path.read_bytes()
            if name == "all":
                data = bytes([list(fuzz_targets.TARGETS).index(n)]) + data
            (corpus / f"{n}-{path.name}").write_bytes(data)
    n_seeds = len(list(corpus.iterdir()))
    end = time.monotonic() + seconds
    result = {"target": name, "seconds": 0.0, "execs": 0, "cov": 0, "ft": 0, "seeds": n_seeds, "restarts": 0, "findings": []}
    started = time.monotonic()
    attempt = 0
    while (left := end - time.monotonic()) > 3:
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        cmd = [sys.executable, str(Path(__file__)), "--worker", name, "--until", str(time.time() + left), "--seed", str(seed + attempt),
               "--corpus", str(corpus), "--findings", str(findings), "--stats", str(stats)]
        proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace", timeout=left + 120)
        execs = 0
        for line in proc.stdout.splitlines():
            if m := STAT.match(line):
                execs = int(m.group(1))
                result["cov"], result["ft"] = max(result["cov"], int(m.group(2))), max(result["ft"], int(m.group(3)))
            elif m := DONE.match(line):
                execs = int(m.group(1))
            elif "ERROR: libFuzzer: timeout" in line:
                result["findings"].append({"kind": "hang", "detail": f"a call ran over {HANG_S} s"})
            elif "ERROR: libFuzzer: out-of-memory" in line or "ERROR: libFuzzer: malloc" in line:
                result["findings"].append({"kind": "memory", "detail": line.strip()})
            elif "ERROR: libFuzzer: deadly signal" in line or "ERROR: libFuzzer: fuzz target exited" in line:
                result["findings"].append({"kind": "fatal", "detail": line.strip()})
            elif line.startswith("=== Uncaught Python exception"):
                result["findings"].append({"kind": "harness", "detail": proc.stdout[-2000:]})
        result["execs"] += execs
        if proc.returncode == 0 or "Done " in proc.stdout:
            break
        if not any(f["kind"] in ("hang", "memory", "fatal", "harness") for f in result["findings"][-1:]):
            result["findings"].append({"kind": "worker", "detail": f"exit {proc.returncode}: {proc.stdout[-1500:]}"})
            break  # the harness itself failed: restarting would fail again
        attempt += 1
        result["restarts"] = attempt
    result["seconds"] = round(time.monotonic() - started, 1)
    if stats.exists():
        for key, count in json.loads(stats.read_text())["crashes"].items():
            result["findings"].append({"kind": "crash", "detail": key, "count": count})
    result["finding_files"] = sorted(p.name for p in findings.iterdir())
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, help="total fuzzing time, split evenly over the targets")
    parser.add_argument("--seconds", type=float, help="the same, in seconds (the CI smoke)")
    parser.add_argument("--target", action="append", help="a target of fuzz_targets.TARGETS, or 'all' (one process, the first byte picks the target); repeatable; default: each")
    parser.add_argument("--seed", type=int, default=1, help="libFuzzer's random seed (default 1)")
    parser.add_argument("--json", type=Path, help="write the figures here as JSON")
    parser.add_argument("--list", action="store_true", help="list the targets and exit")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--until", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--corpus", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--findings", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--stats", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    import fuzz_targets

    if args.worker:
        worker(args.worker, args.until, args.seed, args.corpus, args.findings, args.stats)
        return 0
    if args.list:
        for t in fuzz_targets.TARGETS.values():
            print(f"{t.name:10} {t.what}")
        return 0
    try:
        import atheris  # noqa: F401
    except ImportError:
        print("fuzz.py: needs atheris (pip install -r requirements-dev.txt)", file=sys.stderr)
        return 2
    names = args.target or list(fuzz_targets.TARGETS)
    unknown = [n for n in names if n != "all" and n not in fuzz_targets.TARGETS]
    if unknown:
        parser.error(f"unknown target(s) {unknown}; --list shows them")
    total = args.seconds if args.seconds is not None else (args.minutes or 1) * 60
    results = []
    for name in names:
        r = run_target(name, total / len(names), args.seed, CACHE / name)
        results.append(r)
        crashes = sum(1 for f in r["findings"])
        print(f"{name:10} {r['seconds']:7.0f} s  execs {r['execs']:8d}  cov {r['cov']:6d}  ft {r['ft']:7d}  seeds {r['seeds']:3d}  findings {crashes}", flush=True)
        for f in r["findings"]:
            print(f"    {f['kind']}: {f['detail'][:300]}" + (f" (x{f['count']})" if "count" in f else ""), flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 1 if any(r["findings"] for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
