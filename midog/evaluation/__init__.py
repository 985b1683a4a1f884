"""Evaluation by the official MIDOG rules (docs/reference-algorithm.md#official-metric): F1 with the challenge's own matching,
the 2022 average precision, per-scanner tables with bootstrap intervals, plots, and a
UMAP feature map of the scanner domains.

Modules: `io` (reading predictions, ground truth, domains), `metrics` (official F1),
`ap` (AP, threshold sweeps, AUCPR), `report` (evaluate and write outputs), `features`
(UMAP), `cli` (the `evaluate` and `umap` subcommands). Import them directly; this
package imports nothing heavy on its own.
"""
