"""Exponential moving average of a network's weights (the model used for sampling).

Written here because it is a few lines: a shadow copy updated as
``shadow <- d * shadow + (1 - d) * weights`` with the warm-up ``d = min(decay,
(1 + step) / (10 + step))`` of Tensorflow's ExponentialMovingAverage, so that short CPU runs
(hundreds of steps, shorter than 1 / (1 - 0.999)) still end with a useful average.
torch's ``AveragedModel`` offers no warm-up.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """A frozen shadow copy of ``model`` that follows its weights."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    def decay_at(self, step: int) -> float:
        """The decay used after optimisation step ``step`` (0-based), with warm-up."""
        return min(self.decay, (1 + step) / (10 + step))

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        """Move the shadow weights toward ``model``'s; buffers are copied as they are."""
        weight = 1.0 - self.decay_at(step)
        for shadow, live in zip(self.model.parameters(), model.parameters(), strict=True):
            shadow.lerp_(live.detach(), weight)
        for shadow, live in zip(self.model.buffers(), model.buffers(), strict=True):
            shadow.copy_(live)
