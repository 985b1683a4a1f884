"""Every constant of the reference algorithm, in one place, with the reference's values.

The numbers come from the MIDOG 2021 reference container (described in docs/reference-algorithm.md). Change
them only on purpose: the reference-vector parity tests pin the defaults.
"""

from __future__ import annotations

from dataclasses import dataclass, field, asdict


@dataclass(frozen=True)
class DetectorConfig:
    # Tiling (docs/reference-algorithm.md#tiling). The stride is int(0.9 * 512) in the reference.
    tile_size: int = 512
    stride: int = 460
    batch_size: int = 10
    # Normalisation of pixel / 255, per RGB channel.
    mean: tuple[float, float, float] = (0.7481, 0.5692, 0.7225)
    std: tuple[float, float, float] = (0.1759, 0.2284, 0.1792)
    # Network (docs/reference-algorithm.md#network, #anchors-and-box-coding).
    n_classes: int = 2
    fpn_channels: int = 128
    n_head_convs: int = 3
    anchor_scales: tuple[float, ...] = (0.2, 0.4, 0.6, 0.8, 1.0)
    anchor_ratios: tuple[float, ...] = (1.0,)
    box_delta_scale: tuple[float, float, float, float] = (0.1, 0.1, 0.2, 0.2)
    n_domains: int = 4
    # Post-processing (docs/reference-algorithm.md#thresholds-and-nms).
    threshold: float = 0.64  # operating point: "mitotic figure" above this score
    candidate_threshold: float = 0.4  # 2022 candidates and distance-NMS floor
    tile_nms_iou: float = 0.4  # per-tile greedy NMS suppresses IoU > this
    distance_nms_px: float = 25.0  # whole-image NMS radius, inclusive

    @property
    def n_anchors(self) -> int:
        return len(self.anchor_scales) * len(self.anchor_ratios)

    def to_dict(self) -> dict:
        return asdict(self)



REFERENCE = DetectorConfig()

# Official evaluation (docs/reference-algorithm.md#official-metric).
MATCH_RADIUS_MM = 0.0075
AP_BOX_HALF_SIZE_MM = 0.01125
AP_IOU = 0.5

# MIDOG 2021 training set: scanner of each image id range (docs/reference-algorithm.md#data).
MIDOG_SCANNERS: dict[str, tuple[int, int]] = {
    "Hamamatsu XR": (1, 50),
    "Hamamatsu S360": (51, 100),
    "Aperio CS2": (101, 150),
    "Leica GT450": (151, 200),
}
MIDOG_UNLABELED_SCANNER = "Leica GT450"


@dataclass(frozen=True)
class TrainConfig:
    """Training recipe of the reference (docs/reference-algorithm.md#training-recipe)."""

    patch_size: int = 512
    patches_per_scanner_in_batch: int = 3
    train_patches_per_scanner: int = 1500
    val_patches_per_scanner: int = 500
    epochs: int = 200
    max_lr: float = 1e-4
    weight_decay: float = 1e-2
    betas: tuple[float, float] = (0.9, 0.99)
    positive_fraction: float = 0.5  # share of patches centred on a mitotic figure
    match_fg_iou: float = 0.5
    match_bg_iou: float = 0.4
    focal_gamma: float = 2.0
    focal_alpha: float = 0.25  # negatives 0.25, positives 0.75
    domain_weight: float = 1.0
    # fastai 1.0.61 fit_one_cycle, which the reference called with max LR 1e-4: cosine
    # warm-up from max/25 over 30% of the steps, cosine down to max/25e4; AdamW beta1
    # ("momentum") 0.95 -> 0.85 -> 0.95; decoupled weight decay on every parameter.
    div_factor: float = 25.0
    final_div: float = 25e4
    pct_start: float = 0.3
    moms: tuple[float, float] = (0.95, 0.85)
    # Augmentation, each with probability 0.5.
    max_rotate_deg: float = 10.0
    max_zoom: float = 2.0
    max_warp: float = 0.2
    max_lighting: float = 0.5
    seed: int = 0
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Recipe:
    """How the training objective is computed. The defaults are the reference's, exactly
    (its quirks included); each field names one deliberate departure.

    - detach_laterals: no detection gradient through the FPN's lateral connections (the
      reference reads layer2/layer3 through detached hooks); False is the textbook FPN.
    - detach_focal_weights: the focal factor (1 - pt)^2 * alpha_t is a constant under
      autograd, as in the reference; False differentiates through it (the focal-loss paper).
    - normalise: "patch" divides each patch's focal sum by its own max(1, positives), so a
      labelled patch without boxes adds its raw sum, and averages the patches' (box + class)
      losses; "batch" divides the batch's sums by the batch's positives (RetinaNet paper).
    - domain_focal: "batch_mean" applies the focal factor to the batch-mean cross-entropy
      and divides by the batch size again (the reference, ~1/B as strong); "per_sample"
      averages a per-sample focal cross-entropy once.
    """

    name: str = "reference"
    detach_laterals: bool = True
    detach_focal_weights: bool = True
    normalise: str = "patch"
    domain_focal: str = "batch_mean"

    def to_dict(self) -> dict:
        return asdict(self)


RECIPES: dict[str, Recipe] = {
    "reference": Recipe(),
    "improved": Recipe("improved", detach_laterals=False, detach_focal_weights=False, normalise="batch", domain_focal="per_sample"),
}
