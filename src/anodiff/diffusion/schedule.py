"""Noise schedules and the closed-form quantities of the forward process.

Convention used everywhere in :mod:`anodiff.diffusion`: a **level** ``l`` is an integer in
``[0, T]``. Level 0 is clean data (``abar_0 = 1``); level ``l >= 1`` is the state after
``l`` forward steps, with ``abar_l = prod_{i<=l} (1 - beta_i)``. Networks are fed the
0-based index ``l - 1`` (the ``timesteps`` argument of MONAI's and diffusers' schedulers,
whose ``alphas_cumprod[t]`` is our ``abar_{t+1}``). "Noise to L = 500 of T = 1000"
therefore means ``x_500`` with ``abar = alphas_cumprod[499]``.

Forward process (review Eq. 2, with the review's ``alpha_t`` written ``abar_l`` here)::

    x_l = sqrt(abar_l) x_0 + sqrt(1 - abar_l) eps,   eps ~ N(0, I)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import Literal

import torch
from torch import Tensor

from anodiff.errors import AnodiffError

ScheduleKind = Literal["linear", "cosine"]


def linear_betas(
    num_steps: int, beta_start: float = 1e-4, beta_end: float = 0.02, max_beta: float = 0.999
) -> Tensor:
    """Betas of Ho 2020, rescaled so any T spans the same total noise as T = 1000.

    For T = 1000 these are exactly ``linspace(1e-4, 0.02, 1000)`` (the setting of Wolleb's and
    most reference code); for other T the endpoints scale by ``1000 / T`` as in improved-DDPM,
    clipped at ``max_beta`` (only reached for T < 50).
    """
    scale = 1000.0 / num_steps
    betas = torch.linspace(scale * beta_start, scale * beta_end, num_steps, dtype=torch.float64)
    return betas.clamp(max=max_beta)


def cosine_betas(num_steps: int, offset: float = 0.008, max_beta: float = 0.999) -> Tensor:
    """Betas of the cosine schedule (Nichol & Dhariwal 2021, Eq. 17), clipped at ``max_beta``."""
    steps = torch.arange(num_steps + 1, dtype=torch.float64) / num_steps
    f = torch.cos((steps + offset) / (1 + offset) * math.pi / 2) ** 2
    abar = f / f[0]
    return (1 - abar[1:] / abar[:-1]).clamp(max=max_beta)


@dataclass(frozen=True)
class NoiseSchedule:
    """A discrete variance-preserving schedule with ``T`` steps.

    ``abar`` has ``T + 1`` entries, ``abar[0] = 1`` (clean data) and ``abar[l]`` for level l.
    All tables are float64 so that samplers lose no precision when combining them; values
    are cast to the data's dtype at the point of use.
    """

    betas: Tensor
    kind: str = "custom"

    @classmethod
    def create(cls, kind: ScheduleKind = "linear", num_steps: int = 1000) -> NoiseSchedule:
        """Build the ``linear`` or ``cosine`` schedule with ``num_steps`` (= T) steps."""
        if num_steps < 1:
            raise AnodiffError(f"schedule: num_steps must be >= 1, got {num_steps}")
        builders = {"linear": linear_betas, "cosine": cosine_betas}
        if kind not in builders:
            raise AnodiffError(f"schedule: unknown kind {kind!r}; choose one of {sorted(builders)}")
        return cls(betas=builders[kind](num_steps), kind=kind)

    @property
    def num_steps(self) -> int:
        """T, the number of forward steps (the highest level)."""
        return int(self.betas.shape[0])

    @cached_property
    def abar(self) -> Tensor:
        """Cumulative signal fraction, shape (T + 1,), ``abar[0] = 1`` (computed once)."""
        return torch.cat([torch.ones(1, dtype=torch.float64), torch.cumprod(1 - self.betas, 0)])

    def to_dict(self) -> dict[str, object]:
        """JSON-friendly description, enough to rebuild the schedule with :meth:`create`."""
        return {"kind": self.kind, "num_steps": self.num_steps}

    def alpha_sigma(self, level: Tensor | int, like: Tensor) -> tuple[Tensor, Tensor]:
        """``(sqrt(abar_l), sqrt(1 - abar_l))`` for each level, shaped to broadcast with ``like``.

        ``level`` is an int or an (N,) integer tensor with values in [0, T].
        """
        abar = self.abar.to(like.device)[torch.as_tensor(level, device=like.device)]
        shape = (-1,) + (1,) * (like.dim() - 1) if abar.dim() == 1 else ()
        abar = abar.reshape(shape).to(like.dtype)
        return abar.sqrt(), (1 - abar).sqrt()

    def q_sample(self, x0: Tensor, level: Tensor | int, noise: Tensor) -> Tensor:
        """Draw ``x_l`` given ``x_0`` (review Eq. 2): ``sqrt(abar) x0 + sqrt(1 - abar) noise``."""
        alpha, sigma = self.alpha_sigma(level, x0)
        return alpha * x0 + sigma * noise

    def predict_x0(self, x: Tensor, level: Tensor | int, eps: Tensor) -> Tensor:
        """Invert Eq. 2 for ``x_0`` given a noise estimate (Tweedie's denoised estimate)."""
        alpha, sigma = self.alpha_sigma(level, x)
        return (x - sigma * eps) / alpha

    def predict_eps(self, x: Tensor, level: Tensor | int, x0: Tensor) -> Tensor:
        """Invert Eq. 2 for the noise given an ``x_0`` estimate (levels >= 1 only)."""
        alpha, sigma = self.alpha_sigma(level, x)
        return (x - alpha * x0) / sigma

    def posterior(self, x0: Tensor, x: Tensor, level: int) -> tuple[Tensor, float]:
        """Mean and variance of ``q(x_{l-1} | x_l, x_0)`` (Ho 2020, Eq. 6-7).

        Mean ``= sqrt(abar_{l-1}) beta_l / (1 - abar_l) x0 + sqrt(a_l)(1 - abar_{l-1})/(1 - abar_l)
        x_l`` and variance ``beta~_l = (1 - abar_{l-1}) / (1 - abar_l) beta_l``.
        """
        if not 1 <= level <= self.num_steps:
            raise AnodiffError(f"posterior: level must be in [1, {self.num_steps}], got {level}")
        abar = self.abar
        beta = float(self.betas[level - 1])
        a_prev, a_cur = float(abar[level - 1]), float(abar[level])
        coef_x0 = math.sqrt(a_prev) * beta / (1 - a_cur)
        coef_xt = math.sqrt(1 - beta) * (1 - a_prev) / (1 - a_cur)
        return coef_x0 * x0 + coef_xt * x, (1 - a_prev) / (1 - a_cur) * beta

    def check_level(self, level: int, name: str = "level") -> int:
        """Validate a user-given level (boundary check with a clear message)."""
        if not 0 <= int(level) <= self.num_steps:
            raise AnodiffError(f"{name} must be in [0, {self.num_steps}], got {level}")
        return int(level)
