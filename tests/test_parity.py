"""Parity with the reference pipeline: `midog detect` reproduces the reference container's
outputs on the reference-vector images. Differences are accepted only for the cases the
vectors' README lists (threshold edges, near-ties in the NMS order, 1 px truncation), and
each one met is named in the test output. The bounds are the figures docs/commands.md states:
probabilities within PROBABILITY_TOLERANCE, at most MAX_TOLERATED differences over all vectors."""

from __future__ import annotations

import csv
import json
import math
import warnings

import jsonschema
import numpy as np
import pytest
from conftest import DEVICE, SHARED, VECTOR_NAMES, VECTOR_SPACING_MM, need_shared

from midog.commands.cli import main

THRESHOLDS = (0.64, 0.4)
# Largest measured on the CPU: 6.2e-6 (float32 rounding of a channels-last network with
# BatchNorm folded, against the reference's layout). docs/commands.md states both figures.
PROBABILITY_TOLERANCE = 1e-5
# Measured: 6 swaps of near-tied neighbours in the 2022 lists (4 in A, 1 in B, 1 in C), no
# other difference; the 2021 outputs are identical.
MAX_TOLERATED = 6


def expected_scores(vectors_dir, name: str, style: str) -> list[float]:
    suffix = "detections.csv" if style == "2021" else "detections_2022.csv"
    with open(vectors_dir / f"{name}.{suffix}") as f:
        return [float(row["score"]) for row in csv.DictReader(f)]


def explain_differences(ours: list[dict], expected: list[dict], exp_scores: list[float], spacing: float) -> list[str]:
    """Pair points, then return the tolerated differences; fail on anything else."""
    if ours == expected:
        return []
    notes = []
    exp_xy = np.array([p["point"][:2] for p in expected]) / spacing
    our_xy = np.array([p["point"][:2] for p in ours]).reshape(-1, 2) / spacing
    our_scores = [p.get("probability") for p in ours]
    used: set[int] = set()

    def near_tie(i: int) -> bool:
        d = np.hypot(*(exp_xy - exp_xy[i]).T)
        return any(j != i and d[j] <= 25 + 1 and abs(exp_scores[j] - exp_scores[i]) < 1e-4 for j in range(len(expected)))

    pairs: list[tuple[int, int]] = []
    for i, p in enumerate(expected):
        d = np.hypot(*(our_xy - exp_xy[i]).T) if len(ours) else np.array([])
        candidates = [j for j in np.argsort(d) if d[j] <= 2 and j not in used]
        if candidates:
            j = int(candidates[0])
            used.add(j)
            pairs.append((i, j))
            if our_scores[j] is not None:
                assert abs(our_scores[j] - p["probability"]) < PROBABILITY_TOLERANCE, f"probability differs at point {i}"
            if d[j] > 0:
                assert d[j] <= 0.5 * math.sqrt(2) + 1e-9, f"point {i} moved by {d[j]:.2f} px"
                notes.append(f"point {i}: 1 px truncation difference ({d[j]:.2f} px)")
            if our_scores[j] is not None and p["name"] != ours[j]["name"]:
                assert abs(exp_scores[i] - 0.64) < 1e-3, f"point {i} changed name at score {exp_scores[i]}"
                notes.append(f"point {i}: score {exp_scores[i]:.6f} within 1e-3 of 0.64 changed name")
            continue
        if any(abs(exp_scores[i] - t) < 1e-3 for t in THRESHOLDS):
            notes.append(f"point {i}: score {exp_scores[i]:.6f} within 1e-3 of a threshold is missing")
        elif near_tie(i):
            notes.append(f"point {i}: near-tie within 25 px, the neighbour survived instead")
        else:
            pytest.fail(f"expected point {i} (score {exp_scores[i]:.6f}) has no counterpart")
    for j in sorted(set(range(len(ours))) - used):
        d = np.hypot(*(exp_xy - our_xy[j]).T)
        tie = [i for i in range(len(expected)) if d[i] <= 25 + 1 and our_scores[j] is not None and abs(exp_scores[i] - our_scores[j]) < 1e-4]
        edge = our_scores[j] is not None and any(abs(our_scores[j] - t) < 1e-3 for t in THRESHOLDS)
        # 2021 points carry no score: an extra one must sit next to an expected near-tie.
        assert edge or tie or (our_scores[j] is None and any(near_tie(i) for i in np.flatnonzero(d <= 26))), (
            f"unexpected extra point {j} at {our_xy[j]}"
        )
        notes.append(f"extra point {j}: {'threshold edge' if edge else 'near-tie swap'}")
    # Same order: float32 rounding (~1e-6) may only swap points whose scores are that close.
    for (i1, j1), (i2, j2) in zip(pairs, pairs[1:]):
        if j2 < j1:
            gap = abs(exp_scores[i1] - exp_scores[i2])
            assert gap < PROBABILITY_TOLERANCE, f"expected points {i1} and {i2} come out in the other order (scores {gap:.2e} apart)"
            notes.append(f"points {i1} and {i2}: near-tie in score order ({gap:.1e} apart), swapped")
    return notes


@pytest.fixture(scope="module")
def differences(vectors_dir, vector_weights, tmp_path_factory):
    """Runs `midog detect` on a vector in a style once per module; returns the tolerated
    differences from the reference's output (failing on any other)."""
    schema = json.loads(need_shared(SHARED / "schemas" / "multiple-points.schema.json").read_text())
    out_dir = tmp_path_factory.mktemp("parity")
    cache: dict[tuple[str, str], list[str]] = {}

    def run(name: str, style: str) -> list[str]:
        if (name, style) in cache:
            return cache[name, style]
        out = out_dir / f"{name}.{style}.json"
        args = ["detect", str(vectors_dir / f"{name}.tiff"), "--weights", str(vector_weights), "-o", str(out)]
        assert main([*args, "--style", style, "--no-progress", "--device", DEVICE]) == 0
        ours = json.loads(out.read_text())
        jsonschema.validate(ours, schema)
        expected = json.loads((vectors_dir / f"{name}.expected_{style}.json").read_text())
        assert ours["type"] == expected["type"] and ours["version"] == expected["version"]
        spacing = VECTOR_SPACING_MM[name]
        notes = explain_differences(ours["points"], expected["points"], expected_scores(vectors_dir, name, style), spacing)
        for note in notes:
            warnings.warn(f"{name} {style}: tolerated difference: {note}")
        cache[name, style] = notes
        return notes

    return run


@pytest.mark.parametrize("name", VECTOR_NAMES)
def test_detect_reproduces_reference_outputs(name, differences):
    # The 2021 file (points above the operating point) is the reference's, byte for byte.
    assert differences(name, "2021") == []
    assert len(differences(name, "2022")) <= MAX_TOLERATED


def test_differences_over_all_vectors_are_as_few_as_the_readme_says(differences):
    notes = [note for name in VECTOR_NAMES for style in ("2021", "2022") for note in differences(name, style)]
    assert len(notes) <= MAX_TOLERATED, notes
