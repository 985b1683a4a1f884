"""Detection and domain losses of the reference (docs/reference-algorithm.md#training-recipe).

Detection, per labelled image: sigmoid focal loss (gamma 2; positives weighted 0.75,
negatives 0.25) over both class columns of every non-ignored anchor, summed and divided
by the number of matched anchors, plus smooth L1 on the encoded deltas of matched
anchors. Domain: 0.25 * (1 - pt)^2 * cross-entropy, summed over the batch.
Total = detection sum / n_labelled + domain_weight * domain sum / batch size.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .matching import IGNORE


@dataclass
class LossParts:
    total: torch.Tensor
    detection: torch.Tensor  # mean over labelled images (0 when none)
    domain: torch.Tensor  # mean over the batch (0 when the domain branch is off)


def focal_loss(logits: torch.Tensor, targets: torch.Tensor, gamma: float = 2.0, alpha: float = 0.25) -> torch.Tensor:
    """Summed sigmoid focal loss; `alpha` weights negatives, 1 - alpha positives."""
    p = torch.sigmoid(logits)
    pt = p * targets + (1 - p) * (1 - targets)
    weight = ((1 - alpha) * targets + alpha * (1 - targets)) * (1 - pt).pow(gamma)
    return (weight * F.binary_cross_entropy_with_logits(logits, targets, reduction="none")).sum()


def detection_loss(
    class_logits: torch.Tensor,
    box_deltas: torch.Tensor,
    matches: torch.Tensor,
    box_targets: torch.Tensor,
    gamma: float = 2.0,
    alpha: float = 0.25,
) -> torch.Tensor:
    """One image: class logits (N, C), deltas (N, 4), matches (N,), targets (N, 4)."""
    fg = matches >= 0
    keep = matches != IGNORE
    n_fg = int(fg.sum())
    box = F.smooth_l1_loss(box_deltas[fg], box_targets[fg]) if n_fg else box_deltas.sum() * 0
    one_hot = torch.zeros_like(class_logits[keep])
    one_hot[fg[keep], 0] = 1.0  # only column 0, the mitotic figure, is ever positive
    cls = focal_loss(class_logits[keep], one_hot, gamma, alpha) / max(1, n_fg)
    return box + cls


def domain_focal_loss(domain_logits: torch.Tensor, domains: torch.Tensor, gamma: float = 2.0, alpha: float = 0.25) -> torch.Tensor:
    """Summed focal cross-entropy of the scanner classifier."""
    ce = F.cross_entropy(domain_logits, domains, reduction="none")
    pt = torch.exp(-ce)
    return (alpha * (1 - pt).pow(gamma) * ce).sum()


def total_loss(
    class_logits: torch.Tensor,
    box_deltas: torch.Tensor,
    domain_logits: torch.Tensor | None,
    matches: torch.Tensor,
    box_targets: torch.Tensor,
    domains: torch.Tensor,
    labelled: torch.Tensor,
    domain_weight: float = 1.0,
    gamma: float = 2.0,
    alpha: float = 0.25,
) -> LossParts:
    """The reference's batch loss; losses are computed in float32 whatever the autocast."""
    class_logits, box_deltas = class_logits.float(), box_deltas.float()
    det = class_logits.new_zeros(())
    idx = torch.nonzero(labelled).flatten().tolist()
    for i in idx:
        det = det + detection_loss(class_logits[i], box_deltas[i], matches[i], box_targets[i], gamma, alpha)
    det = det / max(1, len(idx))
    dom = class_logits.new_zeros(())
    if domain_logits is not None:
        dom = domain_focal_loss(domain_logits.float(), domains, gamma, alpha) / domain_logits.shape[0]
    return LossParts(det + domain_weight * dom, det.detach(), dom.detach())
