"""Every constant of the reference algorithm, in one place, with the reference's values.

The numbers come from the MIDOG 2021 reference container (described in docs/reference-algorithm.md). Change
them only on purpose: the reference-vector parity tests pin the defaults.
"""

from __future__ import annotations

import math
from argparse import Namespace
from dataclasses import asdict, dataclass, field, replace

from .fields import build, given, namespace, option, option_dest
from ..errors import MidogError


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
    # The classification head's last bias starts at log(p / (1 - p)) for this p, so every
    # anchor first scores p and the focal loss starts small: the reference's bias is -4.0.
    prior_probability: float = 1 / (1 + math.exp(4.0))
    # Scanner discriminator: dropout after each of its convs, N(0, std) initial conv weights.
    domain_dropout: float = 0.5
    domain_init_std: float = 0.01
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
# The input normalisation of a model trained without standardisation (`--no-standardize`,
# the paper's weak baseline): the network sees pixel / 255.
UNIT_NORMALISATION = {"mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0)}


def with_normalisation(config: DetectorConfig, meta: dict | None) -> DetectorConfig:
    """`config` with the input normalisation a checkpoint records (meta["normalisation"],
    written by `midog train`), so a model trained without standardisation is run as it was
    trained; checkpoints without one, or with the config's own values, change nothing."""
    norm = (meta or {}).get("normalisation") or {}
    try:
        mean, std = tuple(float(v) for v in norm["mean"]), tuple(float(v) for v in norm["std"])
    except (KeyError, TypeError, ValueError):
        return config
    if len(mean) != 3 or len(std) != 3 or (mean, std) == (config.mean, config.std):
        return config
    return replace(config, mean=mean, std=std)

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


# ---------------------------------------------------------------------------
# Training: one dataclass per concern, embedded in `RunConfig`. The `midog train` options
# are generated from these fields (midog.config.checks), so a field added here is an option.
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class DataConfig:
    """Where the training data is and how it is split."""

    annotations: str = field(metadata=option("MIDOG.json (bbox x1,y1,x2,y2)", positional=True, metavar="MIDOG_JSON"))
    images_dir: str | None = field(default=None, metadata=option("folder of the TIFFs (default: beside MIDOG_JSON)", flag="images"))
    box_format: str = field(default="xyxy", metadata=option("annotations are plain COCO bbox x,y,w,h", flag="coco-xywh", const="xywh"))
    scanners_file: str | None = field(default=None, metadata=option(
        "scanner id ranges JSON (default: scanners.json beside MIDOG_JSON, else MIDOG 2021's)", flag="scanners"))
    unlabeled: str | None = field(default=None, metadata=option("name of the unlabelled scanner (default: Leica GT450 / scanners.json's)"))
    split_file: str | None = field(default=None, metadata=option("reference split file (train_val_split.txt format)", flag="split"))
    val_per_scanner: int | None = field(default=None, metadata=option("seeded split: validation images per scanner (default 1/5)"))
    test_per_scanner: int = field(default=0, metadata=option("seeded split: held-out test images per scanner"))


@dataclass(frozen=True)
class SamplingConfig:
    """Which patches a batch and an epoch hold."""

    patch_size: int = field(default=512, metadata=option("patch side in pixels, a multiple of 32"))
    per_scanner: int = field(default=3, metadata=option("patches per scanner in a batch"))
    train_patches: int = field(default=1500, metadata=option("training patches per scanner per epoch"))
    val_patches: int = field(default=500, metadata=option("validation patches per scanner per epoch"))
    positive_fraction: float = field(default=0.5, metadata=option("share of labelled patches centred on a mitotic figure"))


@dataclass(frozen=True)
class OptimConfig:
    """AdamW under fastai 1.0.61's fit_one_cycle, which the reference called with max LR
    1e-4: cosine warm-up from max/div_factor over pct_start of the steps, cosine down to
    max/final_div; beta1 ("momentum") moms[0] -> moms[1] -> moms[0]; decoupled weight
    decay on every parameter."""

    epochs: int = field(default=200, metadata=option("training epochs"))
    max_lr: float = field(default=1e-4, metadata=option("peak learning rate of the one-cycle schedule"))
    weight_decay: float = field(default=1e-2, metadata=option("decoupled (AdamW) weight decay"))
    betas: tuple[float, float] = field(default=(0.9, 0.99), metadata=option("AdamW betas (beta1 is then set by the schedule)"))
    div_factor: float = field(default=25.0, metadata=option("the schedule starts at max LR / this"))
    final_div: float = field(default=25e4, metadata=option("the schedule ends at max LR / this"))
    pct_start: float = field(default=0.3, metadata=option("share of the steps spent warming up"))
    moms: tuple[float, float] = field(default=(0.95, 0.85), metadata=option("beta1 at the ends and at the peak of the schedule"))


@dataclass(frozen=True)
class Recipe:
    """How the training objective is computed. The defaults are the reference's, exactly
    (its quirks included); each switch names one deliberate departure.

    - detach_laterals: no detection gradient through the FPN's lateral connections (the
      reference reads layer2/layer3 through detached hooks); False is the textbook FPN.
    - detach_focal_weights: the focal factor (1 - pt)^gamma * alpha_t is a constant under
      autograd, as in the reference; False differentiates through it (the focal-loss paper).
    - normalise: "patch" divides each patch's focal sum by its own max(1, positives), so a
      labelled patch without boxes adds its raw sum, and averages the patches' (box + class)
      losses; "batch" divides the batch's sums by the batch's positives (RetinaNet paper).
    - domain_focal: "batch_mean" applies the focal factor to the batch-mean cross-entropy
      and divides by the batch size again (the reference, ~1/B as strong); "per_sample"
      averages a per-sample focal cross-entropy once.

    The numbers: anchors match a box when their IoU is above match_fg_iou, are background
    below match_bg_iou and ignored between; focal loss with focal_gamma, negatives weighted
    focal_alpha and positives 1 - focal_alpha (the scanner loss uses the same pair); the
    domain loss is added times domain_weight (0 turns domain adaptation off).
    """

    name: str = field(default="reference", metadata=option(cli=False))
    detach_laterals: bool = field(default=True, metadata=option(
        "no detection gradient through the FPN laterals (reference) or gradient through them (improved)", negatable=True))
    detach_focal_weights: bool = field(default=True, metadata=option(
        "focal modulating weights constant (reference) or differentiated (improved)",
        flag="focal-weights", choices={"detached": True, "differentiated": False}))
    normalise: str = field(default="patch", metadata=option(
        "class loss / each patch's positives, patches averaged (reference) or / the batch's positives (improved)",
        choices=["patch", "batch"]))
    domain_focal: str = field(default="batch_mean", metadata=option(
        "focal factor on the batch-mean cross-entropy, then / batch size (reference) "
        "or per sample, averaged once (improved; about batch-size times stronger)", choices=["batch_mean", "per_sample"]))
    match_fg_iou: float = field(default=0.5, metadata=option("an anchor is foreground above this IoU with a box"))
    match_bg_iou: float = field(default=0.4, metadata=option("an anchor is background below this IoU"))
    focal_gamma: float = field(default=2.0, metadata=option("focal loss exponent"))
    focal_alpha: float = field(default=0.25, metadata=option("focal weight of the negatives (positives: 1 - this)"))
    domain_weight: float = field(default=1.0, metadata=option("weight of the scanner loss; 0 turns domain adaptation off"))

    def __post_init__(self) -> None:
        if self.normalise not in ("patch", "batch"):
            raise MidogError(f"--normalise must be patch or batch, got {self.normalise!r}")
        if self.domain_focal not in ("batch_mean", "per_sample"):
            raise MidogError(f"--domain-focal must be batch_mean or per_sample, got {self.domain_focal!r}")

    def to_dict(self) -> dict:
        return asdict(self)


RECIPES: dict[str, Recipe] = {
    "reference": Recipe(),
    "improved": Recipe("improved", detach_laterals=False, detach_focal_weights=False, normalise="batch", domain_focal="per_sample"),
}


def make_recipe(name: str = "reference", **overrides: object) -> Recipe:
    """The named recipe with some fields changed; a changed one is named NAME+custom."""
    if name not in RECIPES:
        raise MidogError(f"--recipe must be one of {', '.join(RECIPES)}, got {name!r}")
    recipe = replace(RECIPES[name], **overrides)
    return recipe if recipe == RECIPES[name] else replace(recipe, name=f"{name}+custom")


@dataclass(frozen=True)
class AugmentConfig:
    """Dihedral flips, rotation, zoom, perspective warp and lighting, each with probability p."""

    enabled: bool = field(default=True, metadata=option("no augmentation", flag="augment"))
    p: float = field(default=0.5, metadata=option("probability of each augmentation", flag="augment-p"))
    max_rotate_deg: float = field(default=10.0, metadata=option("rotation up to this many degrees either way"))
    max_zoom: float = field(default=2.0, metadata=option("zoom in by up to this factor"))
    max_warp: float = field(default=0.2, metadata=option("perspective warp strength"))
    max_lighting: float = field(default=0.5, metadata=option("brightness and contrast change"))


@dataclass(frozen=True)
class RunConfig:
    """Everything a training run depends on, by concern; checkpoints record all of it."""

    data: DataConfig
    out_dir: str = field(metadata=option("run folder (checkpoints, logs)", flag="out", aliases=("-o",)))
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    objective: Recipe = field(default_factory=Recipe)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    select: str = field(default="aucpr", metadata=option(
        "model selection: best mean validation AUCPR (paper) or lowest detection minus domain loss (reference code)",
        choices=["aucpr", "loss"]))
    val_every: int = field(default=1, metadata=option("validate every N epochs (and after the last)"))
    val_min_score: float = field(default=0.05, metadata=option("validation keeps detections above this score"))
    seed: int = field(default=0, metadata=option("seed of the split, the patches and the initialisation"))
    standardize: bool = field(default=True, metadata=option(
        "no input standardisation: the network sees pixel / 255 without the channel mean/std (the paper's weak baseline)"))
    backbone: str = field(default="imagenet", metadata=option("imagenet (torchvision download), a resnet18 state_dict file, or none"))
    init: str | None = field(default=None, metadata=option(
        "fine-tune: start from these detector weights (every tensor; --backbone is then unused), with the "
        "fine-tuning defaults docs/new-scanner.md lists for options not given", metavar="IN.pth"))
    device: str = field(default="auto", metadata=option("auto, cpu, cuda[:N]"))
    amp: str = field(default="off", metadata=option("mixed precision for the training steps (fp16 on CUDA, bf16 on CPU); validation runs in float32, as midog detect does", choices=["off", "bf16", "fp16", "auto"]))
    threads: int | None = field(default=None, metadata=option("torch CPU threads"))
    cache_images: int = field(default=16, metadata=option("images kept open at once"))
    progress: bool = field(default=True, metadata=option("no progress bar"))

    def to_dict(self) -> dict:
        return asdict(self)


# Fine-tuning (`midog train --init`): a short schedule at a fifth of the reference's learning
# rate, so a few reviewed slides adjust the weights rather than retrain them; no domain loss,
# since reviewed slides of one scanner give the domain classifier nothing to separate.
FINE_TUNING = {"epochs": 5, "max_lr": 2e-5, "train_patches": 200, "val_patches": 50, "domain_weight": 0.0}


def run_config_from(ns: Namespace) -> RunConfig:
    """The RunConfig of `midog train`'s parsed options: the given ones over the defaults,
    the recipe flags over the recipe named by `ns.recipe`; with --init, FINE_TUNING's values
    for the options not given."""
    if getattr(ns, option_dest(RunConfig, "init"), None):
        owners = {"epochs": OptimConfig, "max_lr": OptimConfig, "train_patches": SamplingConfig, "val_patches": SamplingConfig, "domain_weight": Recipe}
        for name, value in FINE_TUNING.items():
            if not hasattr(ns, option_dest(owners[name], name)):
                setattr(ns, option_dest(owners[name], name), value)
    return build(RunConfig, ns, objective=make_recipe(getattr(ns, "recipe", "reference"), **given(Recipe, ns)))


def run_config(annotations: str, out_dir: str, recipe: str = "reference", **flat: object) -> RunConfig:
    """A RunConfig from flat field names (`epochs=2, patch_size=224, detach_laterals=False`),
    each routed to the concern that holds it, exactly as the command line does."""
    ns = namespace(RunConfig, annotations=str(annotations), out_dir=str(out_dir), **flat)
    ns.recipe = recipe
    return run_config_from(ns)
