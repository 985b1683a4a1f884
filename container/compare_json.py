"""Compares a written mitotic-figures.json with an expected one; used by test.sh and
container/buildah-check.sh on the host (standard library only).

    python3 container/compare_json.py GOT EXPECTED [TOLERANCE] [--name NAME]

With --name, GOT must carry that top-level "name" (the 2025 output's "Points of interest"),
and is compared without it (the expected outputs are the 2021/2022 reference's, unnamed).
Exit 0 and a "equal"/"match" line when the JSON values are equal, or, with TOLERANCE > 0,
when they hold the same points with the same names and probabilities within TOLERANCE, in
any order: the 2022 probabilities are float32 scores whose last digits depend on the CPU/GPU
kernels, and near-equal candidates may then swap places. Exit 1 with a short account of the difference otherwise.
"""

from __future__ import annotations

import json
import sys
from typing import Any


def difference(got: Any, want: Any, tolerance: float) -> str | None:
    """None when they match, else the first difference in words."""
    if got == want:
        return None
    if not isinstance(got, dict) or not isinstance(want, dict):
        return "not a JSON object"
    rest = [k for k in set(got) | set(want) if k != "points"]
    if any(got.get(k) != want.get(k) for k in rest):
        return f"keys other than points differ: {sorted(rest)}"
    gp, wp = got.get("points", []), want.get("points", [])
    if len(gp) != len(wp):
        return f"{len(gp)} points, expected {len(wp)}"
    if tolerance <= 0:
        return "points differ"
    # Pair by position in mm: two candidates whose scores differ by less than the float32
    # noise may come out in either order.
    unused = list(range(len(gp)))
    for i, q in enumerate(wp):
        j = next((j for j in unused if gp[j]["point"] == q["point"] and set(gp[j]) == set(q)), None)
        if j is None:
            return f"expected point {i} {json.dumps(q)} has no counterpart"
        unused.remove(j)
        p = gp[j]
        if p.get("name") != q.get("name"):
            return f"point {json.dumps(p)} named differently from expected {json.dumps(q)}"
        if "probability" in q and abs(p["probability"] - q["probability"]) > tolerance:
            return f"point {json.dumps(p)}: probability differs from {q['probability']} by more than {tolerance:g}"
    return None


def main(argv: list[str]) -> int:
    name = None
    if "--name" in argv:
        i = argv.index("--name")
        name = argv[i + 1]
        argv = argv[:i] + argv[i + 2 :]
    got_path, want_path = argv[0], argv[1]
    tolerance = float(argv[2]) if len(argv) > 2 else 0.0
    with open(got_path) as f:
        got = json.load(f)
    with open(want_path) as f:
        want = json.load(f)
    if name is not None:
        if not isinstance(got, dict) or got.get("name") != name:
            print(f"differ: top-level name {got.get('name') if isinstance(got, dict) else None!r}, expected {name!r}")
            return 1
        got = {k: v for k, v in got.items() if k != "name"}
    problem = difference(got, want, tolerance)
    if problem is None:
        print("equal" if got == want else f"match (probabilities within {tolerance:g})")
        return 0
    print(f"differ: {problem}")
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
