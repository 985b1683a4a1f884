"""The reference's schedules: fastai 1.0.61's one-cycle policy and the GRL weight.

fastai's `OneCycleScheduler` sets the learning rate and beta1 before every optimiser
step from two cosine phases; torch's `OneCycleLR` differs in its phase boundaries (it
counts total_steps - 1 and puts the peak one step earlier) and in its final value, so
the schedule is computed here, in float64, as fastai does it.
"""

from __future__ import annotations

import math

import torch

from ..config import OptimConfig


def annealing_cos(start: float, end: float, pct: float) -> float:
    """Cosine from `start` (pct 0) to `end` (pct 1), fastai's `annealing_cos`."""
    return end + (start - end) / 2 * (math.cos(math.pi * pct) + 1)


class OneCycle:
    """lr and beta1 for optimiser step k (0-based) of `total_steps`.

    Step 0 uses the phase-1 start; after step k the scheduler advances, so step k >= 1 uses
    phase 1 at k / a1 while k <= a1 (a1 = int(pct_start * total)), then phase 2 at
    (k - a1) / (total - a1).
    """

    def __init__(self, total_steps: int, optim: OptimConfig = OptimConfig()) -> None:
        self.total = max(1, int(total_steps))
        self.a1 = int(self.total * optim.pct_start)
        self.a2 = self.total - self.a1
        top = optim.max_lr
        self.lrs = ((top / optim.div_factor, top), (top, top / optim.final_div))
        lo, hi = optim.moms
        self.moms = ((lo, hi), (hi, lo))

    def _value(self, pairs: tuple[tuple[float, float], tuple[float, float]], k: int) -> float:
        if k <= 0:
            return pairs[0][0] if self.a1 > 0 else pairs[1][0]
        if k <= self.a1:
            return annealing_cos(*pairs[0], k / self.a1)
        return annealing_cos(*pairs[1], min(1.0, (k - self.a1) / self.a2))

    def lr(self, k: int) -> float:
        return self._value(self.lrs, k)

    def momentum(self, k: int) -> float:
        return self._value(self.moms, k)

    def apply(self, opt: torch.optim.Optimizer, k: int) -> None:
        """Set lr and beta1 of every parameter group for step k (before `opt.step()`)."""
        lr, mom = self.lr(k), self.momentum(k)
        for group in opt.param_groups:
            group["lr"] = lr
            group["betas"] = (mom, group["betas"][1])


def grl_alpha(epoch: int, epochs: int) -> float:
    """Gradient-reversal weight for epoch `epoch` (0-based), set at its start as the
    reference's callback does: 2 / (1 + exp(-10 p)) - 1 with p = (epoch + 1) / epochs."""
    return 2.0 / (1.0 + math.exp(-10.0 * (epoch + 1) / epochs)) - 1.0
