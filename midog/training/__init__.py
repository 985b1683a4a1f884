"""Training the domain-adversarial RetinaNet (docs/reference-algorithm.md#training-recipe): `midog train`.

Modules, one concept each: `data` (MIDOG.json, scanners, splits, image store),
`sampler` (patches and batches), `augment` (geometry and lighting on a batch),
`matching` (anchor targets), `losses` (focal, smooth L1, domain focal), `validate`
(full-image validation metrics and the operating point), `loop` (optimisation,
checkpoints, resume, logs), `experiment` (the paper's weak / strong / domain-adversarial
comparison, `midog experiment`) with `experiment_report` and `experiment_plots` (its
report and figures). Nothing heavy is imported here.
"""
