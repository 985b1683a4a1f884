"""DIR/report.md of `midog experiment`: Table 1 (precision, recall, F1 per scanner and
model, seen and unseen scanners marked), the spread over seeds, bootstrap F1, the
operating point and how far each scanner's best threshold lies from it, UMAPs, training
curves, and what was found, stated from the numbers whichever model they favour.
results.json holds every number of the tables."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import write_json_atomic, write_text_atomic
from ..evaluation.markdown import md_code, md_text
from ..evaluation.metrics import rates
from .experiment import MODELS, SEEN_LABELLED, SEEN_UNLABELLED, UNSEEN, plateau_threshold
from .experiment_adapt import adaptation_table, arm_means, calibration_arms, recorded_arms
from .experiment_plots import f1_by_threshold, plot_bootstrap, plot_curves, plot_f1_threshold

STATUS_ORDER = (SEEN_LABELLED, SEEN_UNLABELLED, UNSEEN)
POOLED = {SEEN_LABELLED: "all seen, labelled", SEEN_UNLABELLED: "all seen, unlabelled", UNSEEN: "all unseen"}
ALL_SCANNERS = "all scanners"


def _fmt(v: float | None, digits: int = 3) -> str:
    return "n/a" if v is None or (isinstance(v, float) and not np.isfinite(v)) else f"{v:.{digits}f}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "| --- |" + " ---: |" * (len(header) - 1)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows]) + "\n"


def scanner_order(status: dict[str, str], ev: Any) -> list[str]:
    """Scanners of the evaluation, seen labelled first, then seen unlabelled, then unseen."""
    names = [g.name for g in ev.groups[:-1]]
    # `status` lists the scanners in held-out image order, i.e. the training scanners' id order.
    order = list(status) + [n for n in names if n not in status]
    return sorted(names, key=lambda s: (STATUS_ORDER.index(status.get(s, UNSEEN)), order.index(s)))


def rows_of(result: Any, status: dict[str, str]) -> dict[str, dict[str, Any]]:
    """Row name -> {tp, fp, fn, precision, recall, f1, images}: every scanner, the pooled
    status groups and all scanners, from the evaluation's official per-image counts."""
    ev = result.evaluation
    out = {}
    for g in ev.groups[:-1]:
        out[g.name] = {"tp": g.tp, "fp": g.fp, "fn": g.fn, "images": len(g.images), **_rates(g.values)}
    for st in STATUS_ORDER:
        images = [n for g in ev.groups[:-1] if status.get(g.name) == st for n in g.images]
        if images:
            tp, fp, fn = (sum(getattr(ev.scores[n], k) for n in images) for k in ("true_positives", "false_positives", "false_negatives"))
            out[POOLED[st]] = {"tp": tp, "fp": fp, "fn": fn, "images": len(images), **_rates(rates(tp, fp, fn))}
    a = ev.all
    out[ALL_SCANNERS] = {"tp": a.tp, "fp": a.fp, "fn": a.fn, "images": len(a.images), **_rates(a.values)}
    return out


def _rates(values: dict[str, Any]) -> dict[str, Any]:
    return {"precision": values["precision"], "recall": values["recall"], "f1": values["f1_score"]}


def best_thresholds(result: Any, scanners: list[str]) -> dict[str, dict[str, float]]:
    """Per scanner on the held-out images: the best threshold (middle of the exact F1
    maximum), its F1, the F1 at the chosen threshold and the distance best - chosen."""
    out, rows = {}, rows_of(result, {})
    for sc in scanners:
        t, f1 = f1_by_threshold(result.evaluation, sc)
        if not len(t) or not np.isfinite(f1).any():
            continue
        i = plateau_threshold(t, f1, 0.0)
        chosen = result.validation.chosen
        at_chosen = rows[sc]["f1"] if sc in rows else None
        out[sc] = {"best": float(t[i]), "f1_best": float(f1[i]), "f1_chosen": at_chosen, "distance": float(t[i] - chosen)}
    return out


def table1(results: list, status: dict[str, str], labels: dict[str, str]) -> str:
    models = [r.model for r in results]
    header = ["Scanner", "Status"] + [f"{m} {k}" for m in models for k in ("P", "R", "F1")]
    per = [rows_of(r, status) for r in results]
    rows = []
    for name in per[0]:
        st = status.get(name, "pooled" if name != ALL_SCANNERS else "")
        cells = [_fmt(p.get(name, {}).get(k)) for p in per for k in ("precision", "recall", "f1")]
        bold = name in POOLED.values() or name == ALL_SCANNERS
        rows.append([f"**{md_text(name)}**" if bold else md_text(name), st] + cells)
    return _table(header, rows)


def spread_table(results: list, status: dict[str, str], models: list[str]) -> str:
    by_model = {m: [rows_of(r, status) for r in results if r.model == m] for m in models}
    names = list(rows_of(results[0], status))
    rows = []
    for name in names:
        cells = []
        for m in models:
            f1 = [p[name]["f1"] for p in by_model[m] if name in p and p[name]["f1"] is not None]
            sd = statistics.stdev(f1) if len(f1) > 1 else float("nan")
            cells.append(f"{statistics.mean(f1):.3f} ± {_fmt(sd)} ({min(f1):.3f}-{max(f1):.3f})" if f1 else "n/a")
        rows.append([md_text(name)] + cells)
    return _table(["Scanner"] + [f"{m} F1 mean ± sd (min-max)" for m in models], rows)


def mean_rows(results: list, status: dict[str, str]) -> dict[str, dict[str, dict[str, Any]]]:
    """model -> row name -> precision/recall/F1 and TP/FP/FN averaged over the seeds, with the
    seeds' F1 values kept (`f1s`) for their range."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for model in dict.fromkeys(r.model for r in results):
        per = [rows_of(r, status) for r in results if r.model == model]
        rows = {}
        for name in per[0]:
            got = [p[name] for p in per if name in p]
            row: dict[str, Any] = {}
            for key in ("precision", "recall", "f1", "tp", "fp", "fn"):
                vals = [g[key] for g in got if g[key] is not None]
                row[key] = statistics.mean(vals) if vals else None
            row["f1s"] = [g["f1"] for g in got if g["f1"] is not None]
            rows[name] = row
        out[model] = rows
    return out


def findings(results: list, status: dict[str, str], scanners: list[str]) -> list[str]:
    """Statements read off the seed means (one seed: its numbers); no model is assumed to
    win. Two models are called distinguishable on a scanner only when their seeds' F1 ranges
    do not overlap (one seed: when their bootstrap 95% intervals do not)."""
    seeds = sorted({r.seed for r in results})
    per = mean_rows(results, status)
    of = "mean over seeds " + ", ".join(map(str, seeds)) if len(seeds) > 1 else f"seed {seeds[0]}"
    out = [f"Read from the {of}."]
    for name in [POOLED[s] for s in STATUS_ORDER if POOLED[s] in next(iter(per.values()))] + [ALL_SCANNERS]:
        f1 = {m: rows[name]["f1"] for m, rows in per.items() if rows[name]["f1"] is not None}
        if f1:
            top = max(f1.values())
            best = [m for m, v in f1.items() if v == top]
            ranking = ", ".join(f"{m} {v:.3f}" for m, v in sorted(f1.items(), key=lambda kv: -kv[1]))
            verdict = f"best: {best[0]}" if len(best) == 1 else f"tied: {', '.join(best)}"
            out.append(f"**{md_text(name)}**: F1 {ranking}; {verdict}.")
    first = [r for r in results if r.seed == seeds[0]]
    for sc in scanners:
        f1 = {m: per[m][sc]["f1"] for m in per if sc in per[m] and per[m][sc]["f1"] is not None}
        if len(f1) < 2:
            continue
        order = sorted(f1, key=lambda m: -f1[m])
        a, b = order[0], order[1]
        if len(seeds) > 1:
            ra, rb = per[a][sc]["f1s"], per[b][sc]["f1s"]
            overlap = min(ra) <= max(rb) and min(rb) <= max(ra)
            verdict = ("the seeds' F1 ranges overlap: not distinguishable with these seeds" if overlap
                       else "the seeds' F1 ranges do not overlap")
        else:
            cis = {r.model: next(g for g in r.evaluation.groups if g.name == sc).ci95.get("f1_score") for r in first}
            ca, cb = cis.get(a), cis.get(b)
            overlap = ca is not None and cb is not None and ca[0] <= cb[1] and cb[0] <= ca[1]
            verdict = "the bootstrap 95% intervals overlap: not distinguishable on these images" if overlap else "the bootstrap 95% intervals do not overlap"
        out.append(f"{md_text(sc)} ({status.get(sc, '?')}): {a} {f1[a]:.3f} vs {b} {f1[b]:.3f}; {verdict}.")
    bright = [s for s in scanners if status.get(s) == SEEN_UNLABELLED]
    if bright and "weak" in per:
        sc = bright[0]
        w = per["weak"][sc]
        others = ", ".join(f"{m} P {_fmt(per[m][sc]['precision'])} R {_fmt(per[m][sc]['recall'])}" for m in per if m != "weak")
        out.append(f"The weak baseline on {md_text(sc)} (the bright, low-contrast unlabelled scanner): precision {_fmt(w['precision'])}, "
                   f"recall {_fmt(w['recall'])}, F1 {_fmt(w['f1'])} (TP {w['tp']:g}, FP {w['fp']:g}, FN {w['fn']:g}); {others}.")
    return out


def adaptation_findings(means: dict[str, dict[str, float]]) -> list[str]:
    out = []
    for model in dict.fromkeys(k.split(" ", 1)[0] for k in means):
        arms = {k.split(" ", 1)[1]: v for k, v in means.items() if k.startswith(model + " ")}
        # Arms with a larger K exist only for scanners with more held-out images: each mean
        # says over how many scanner-seed rows it is taken.
        cells = ", ".join(f"{a} F1 {v['f1']:.3f} (gap to best {v['gap']:.3f}; {v['n']:g} rows)" for a, v in arms.items())
        out.append(f"{model}, over the shifted scanners and seeds: {cells}.")
    return out


def write_report(result: Any, out: Path) -> Path:
    """report.md, results.json and the figures in `out`; returns the report's path."""
    cfg, results, status = result.config, result.results, result.status
    models = list(dict.fromkeys(r.model for r in results))
    seeds = sorted({r.seed for r in results})
    first = [r for r in results if r.seed == seeds[0]]
    scanners = scanner_order(status, first[0].evaluation)
    labels = {s: f"{s} ({status.get(s, '?')})" for s in scanners}  # for the figures
    md_labels = {s: f"{md_text(s)} ({status.get(s, '?')})" for s in scanners}  # for the tables: names as text
    figures = {
        "bootstrap_f1.png": plot_bootstrap(first, scanners, labels, out / "bootstrap_f1.png"),
        "f1_threshold.png": plot_f1_threshold(first, scanners, labels, out / "f1_threshold.png"),
        "training_curves.png": plot_curves(results, out / "training_curves.png"),
    }
    thresholds = {f"seed {r.seed} {r.model}": best_thresholds(r, scanners) for r in results}
    base = cfg.base
    lines = [
        "# Experiment: weak baseline, strong baseline and domain-adversarial training per scanner",
        "",
        f"Data: {md_code(base.data.annotations)}; seeded split per scanner: {base.data.val_per_scanner or 'one fifth'} validation, "
        f"{base.data.test_per_scanner} test image(s); held-out images: the test split plus every ground-truth image that "
        "MIDOG.json does not list (the unseen scanners, never in training).",
        f"Budget, the same for every model: {base.optim.epochs} epochs of {base.sampling.train_patches} patches per scanner "
        f"({base.sampling.patch_size} px, {base.sampling.per_scanner} per scanner a batch), max LR {base.optim.max_lr:g}, "
        f"backbone {base.backbone}, seeds {', '.join(map(str, seeds))}.",
        "",
        "| model | definition |",
        "| --- | --- |",
        *[f"| {m} | {MODELS[m]} |" for m in models],
        "",
        "Model selection: best mean validation AUCPR, ties to the higher validation domain loss (the more confused "
        "scanner classifier). Operating point: the middle of the plateau (within "
        f"{cfg.plateau_tolerance:g} of the best) of F1 over all labelled validation images pooled.",
        "",
        "## What was found",
        "",
        *[f"- {s}" for s in findings(results, status, scanners)],
        "",
        f"## Table 1: precision (P), recall (R), F1 per scanner (seed {seeds[0]})",
        "",
        table1(first, status, labels),
    ]
    for s in seeds[1:]:
        lines += [f"Seed {s}:", "", table1([r for r in results if r.seed == s], status, labels)]
    lines += ["## Spread over seeds", ""]
    lines += [spread_table(results, status, models)] if len(seeds) > 1 else ["One seed: no spread (run with --seeds N).", ""]
    ci_rows = [[md_labels[sc]] + [f"{_fmt(rows_of(r, status)[sc]['f1'])} {_ci(r, sc)}" for r in first] for sc in scanners]
    lines += [
        "## Bootstrapped F1 per scanner", "",
        f"Resampling the images of each scanner with replacement ({cfg.bootstrap} resamples; seed {seeds[0]}).", "",
        _table(["Scanner"] + [f"{m} F1 [95% CI]" for m in models], ci_rows),
        "![bootstrap F1](bootstrap_f1.png)", "",
        "## Operating point and how it transfers", "",
        "Chosen on validation (dashed lines); per scanner, the held-out images' best threshold and its distance "
        "from the chosen one (best - chosen), with F1 at each.", "",
    ]
    op_rows = []
    for r in results:
        t = thresholds[f"seed {r.seed} {r.model}"]
        best = r.summary.get("best") or {}
        cells = [f"{v['best']:.2f} ({v['distance']:+.2f}; F1 {_fmt(v['f1_best'])} vs {_fmt(v['f1_chosen'])})" if sc in t and (v := t[sc]) else "n/a" for sc in scanners]
        op_rows.append([f"{r.model} (seed {r.seed})", str(best.get("epoch", "?")), f"{r.validation.chosen:.2f}"] + cells)
    lines += [_table(["Model", "Selected epoch", "Chosen threshold"] + [md_text(s) for s in scanners], op_rows), "![F1 against threshold](f1_threshold.png)", ""]
    shifted = {s for s, st in status.items() if st != SEEN_LABELLED}
    adaptation = [row for r in results for row in calibration_arms(r, status, shifted, calibrate_arms="calibrate" in cfg.arms) + recorded_arms(r)]
    lines += ["## Adaptation axis: calibrate, adapt or fine-tune for each shifted scanner", "",
              "Per shifted scanner, its held-out images in a seeded order: the first K are the reviewed ones of \"calibrate K\" "
              "(`midog calibrate`'s rule) and \"fine-tune K\" (`midog train --init`, a short low-LR schedule, its own validated "
              "operating point), the first largest K the unlabelled ones of \"adapt\" (`midog adapt`, with the unlabelled "
              "training scanner's own training images). Every arm is scored on the same later images, which none saw, at "
              "the operating point it deploys. F1 as the mean over seeds (range), after \"at\" the mean threshold (\"own best\": "
              "the best threshold of an arm that changed the network); best F1: the base model's best threshold on those images.", "",
              *adaptation_table(adaptation), *[f"- {x}" for x in adaptation_findings(arm_means(adaptation))], ""]
    lines += ["## UMAP of encoder features, coloured by scanner", ""]
    for r in first:
        if r.umap_png is not None:
            lines += [f"**{r.model}**", "", f"![UMAP {r.model}]({r.umap_png.relative_to(out)})", ""]
    lines += ["## Training curves", "", "Detection loss, domain loss (dotted: validation), GRL alpha and validation AUCPR.", "",
              "![training curves](training_curves.png)", ""]
    lines += ["## Per-model evaluation and wall times", ""]
    for r in results:
        rel = lambda p: p.relative_to(out)  # noqa: E731
        lines.append(f"- {r.model}, seed {r.seed}: run {md_code(rel(r.run_dir))}, predictions {md_code(rel(r.predictions_dir))}, "
                     f"`midog evaluate` outputs {md_code(rel(r.run_dir.parent / (r.run_dir.name + '-evaluation')))}, "
                     f"{result.seconds.get(f'seed {r.seed} {r.model}', float('nan')):.0f} s")
    lines.append("")
    write_json_atomic(out / "results.json", {
        "status": status, "models": models, "seeds": seeds,
        "rows": {f"seed {r.seed} {r.model}": rows_of(r, status) for r in results},
        "chosen_threshold": {f"seed {r.seed} {r.model}": r.validation.chosen for r in results},
        "best_thresholds": thresholds, "seconds": result.seconds, "figures": list(figures), "adaptation": adaptation,
    }, indent=1)
    path = out / "report.md"
    write_text_atomic(path, "\n".join(lines))
    return path


def _ci(r: Any, sc: str) -> str:
    ci = next(g for g in r.evaluation.groups if g.name == sc).ci95.get("f1_score")
    return "[n/a]" if ci is None else f"[{ci[0]:.3f}, {ci[1]:.3f}]"
