"""Detection and domain losses; `Recipe()` (the default) is the reference's objective
(docs/reference-algorithm.md#training-recipe).

Reference, per patch: sigmoid focal loss (gamma 2; positives weighted 0.75, negatives
0.25; the modulating weights are constants under autograd) over both class columns of
every non-ignored anchor, summed and divided by the patch's own max(1, positives); plus
smooth L1 (beta 1) on the encoded deltas, the mean over the positives' n_pos x 4 elements
(0 without positives). Batch: the labelled patches' (box + class) averaged, plus
domain_weight x the focal factor applied to the batch-mean scanner cross-entropy, divided
by the batch size again. Each departure is a `Recipe` field (see `midog.config.settings.Recipe`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torchvision.ops import sigmoid_focal_loss

from ..config import Recipe
from .matching import IGNORE

REFERENCE_RECIPE = Recipe()


@dataclass
class LossParts:
    total: torch.Tensor  # what is backpropagated
    detection: torch.Tensor  # detection part of the total (0 when no patch is labelled)
    domain: torch.Tensor  # domain loss as added before domain_weight (0 when off)
    box_per_patch: torch.Tensor  # (B,) regression loss of every patch, labelled or not
    cls_per_patch: torch.Tensor  # (B,) normalised focal loss of every patch


def focal_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    gamma: float = REFERENCE_RECIPE.focal_gamma,
    alpha: float = REFERENCE_RECIPE.focal_alpha,
    detach_weights: bool = True,
) -> torch.Tensor:
    """Summed sigmoid focal loss; `alpha` weights negatives, 1 - alpha positives."""
    if not detach_weights:
        # torchvision's alpha weights the positives, and its modulating factor is
        # differentiated; same value as below, different gradient (the focal-loss paper's).
        return sigmoid_focal_loss(logits, targets, alpha=1 - alpha, gamma=gamma, reduction="sum")
    with torch.no_grad():  # the reference wraps these weights in Variable(): constants
        p = torch.sigmoid(logits)
        pt = p * targets + (1 - p) * (1 - targets)
        weight = ((1 - alpha) * targets + alpha * (1 - targets)) * (1 - pt).pow(gamma)
    return F.binary_cross_entropy_with_logits(logits, targets, weight, reduction="sum")


class PatchLoss(NamedTuple):
    """One patch's loss terms, before the batch's normalisation."""

    box_mean: torch.Tensor  # smooth L1 over the positives' deltas, mean (0 without positives)
    box_sum: torch.Tensor  # the same, summed
    cls_sum: torch.Tensor  # focal loss summed over the non-ignored anchors
    n_fg: int  # positives

    @property
    def reference(self) -> torch.Tensor:
        """The reference's loss of one patch: box mean + focal sum / max(1, positives)."""
        return self.box_mean + self.cls_sum / max(1, self.n_fg)


def patch_losses(
    class_logits: torch.Tensor,
    box_deltas: torch.Tensor,
    matches: torch.Tensor,
    box_targets: torch.Tensor,
    recipe: Recipe = REFERENCE_RECIPE,
) -> PatchLoss:
    """One patch's loss terms with `recipe`'s focal gamma, alpha and weight handling."""
    fg = matches >= 0
    keep = matches != IGNORE
    n_fg = int(fg.sum())
    if n_fg:
        box_mean = F.smooth_l1_loss(box_deltas[fg], box_targets[fg])
        box_sum = F.smooth_l1_loss(box_deltas[fg], box_targets[fg], reduction="sum")
    else:
        box_mean = box_sum = box_deltas.sum() * 0
    one_hot = torch.zeros_like(class_logits[keep])
    one_hot[fg[keep], 0] = 1.0  # only column 0, the mitotic figure, is ever positive
    cls_sum = focal_loss(class_logits[keep], one_hot, recipe.focal_gamma, recipe.focal_alpha, recipe.detach_focal_weights)
    return PatchLoss(box_mean, box_sum, cls_sum, n_fg)


def domain_focal_loss(
    domain_logits: torch.Tensor,
    domains: torch.Tensor,
    mode: str = "batch_mean",
    recipe: Recipe = REFERENCE_RECIPE,
) -> torch.Tensor:
    """Focal cross-entropy of the scanner classifier, with `recipe`'s focal gamma and alpha
    (the detection loss's pair).

    "batch_mean" (the reference): alpha (1 - exp(-ce))^gamma ce of the batch-MEAN ce.
    "per_sample": the same factor per sample, averaged over the batch.
    """
    if mode == "batch_mean":
        ce = F.cross_entropy(domain_logits, domains)
    elif mode == "per_sample":
        ce = F.cross_entropy(domain_logits, domains, reduction="none")
    else:
        raise ValueError(f"domain_focal must be batch_mean or per_sample, got {mode!r}")
    return (recipe.focal_alpha * (1 - torch.exp(-ce)).pow(recipe.focal_gamma) * ce).mean()


def total_loss(
    class_logits: torch.Tensor,
    box_deltas: torch.Tensor,
    domain_logits: torch.Tensor | None,
    matches: torch.Tensor,
    box_targets: torch.Tensor,
    domains: torch.Tensor,
    labelled: torch.Tensor,
    recipe: Recipe = REFERENCE_RECIPE,
) -> LossParts:
    """The batch loss of `recipe` (its switches, focal gamma and alpha, domain weight);
    computed in float32 whatever the autocast."""
    class_logits, box_deltas = class_logits.float(), box_deltas.float()
    box_means, box_sums, cls_sums, n_pos = [], [], [], []
    for i in range(class_logits.shape[0]):
        bm, bs, cs, n = patch_losses(class_logits[i], box_deltas[i], matches[i], box_targets[i], recipe)
        box_means.append(bm), box_sums.append(bs), cls_sums.append(cs), n_pos.append(n)
    cls_norm = torch.stack([c / max(1, n) for c, n in zip(cls_sums, n_pos)])
    box_mean = torch.stack(box_means)
    idx = torch.nonzero(labelled).flatten().tolist()
    zero = class_logits.new_zeros(())
    if not idx:
        det = zero
    elif recipe.normalise == "patch":
        det = sum(((box_mean[i] + cls_norm[i]) for i in idx), zero) / len(idx)
    elif recipe.normalise == "batch":
        n = max(1, sum(n_pos[i] for i in idx))
        det = sum((cls_sums[i] for i in idx), zero) / n + sum((box_sums[i] for i in idx), zero) / (4 * n)
    else:
        raise ValueError(f"normalise must be patch or batch, got {recipe.normalise!r}")
    dom = zero
    if domain_logits is not None:
        dom = domain_focal_loss(domain_logits.float(), domains, recipe.domain_focal, recipe)
        if recipe.domain_focal == "batch_mean":
            dom = dom / domain_logits.shape[0]  # the reference divides by the batch size again
    return LossParts(det + recipe.domain_weight * dom, det.detach(), dom.detach(), box_mean.detach(), cls_norm.detach())
