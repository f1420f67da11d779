"""Samplers that move an image between any two noise levels, in either direction.

One loop, :func:`transport`, walks a sequence of levels and applies one update per hop;
the updates are plain functions of explicit values (no hidden state), so they can be
checked against the equations and against MONAI's schedulers:

* :func:`ddim_step` — DDIM with ``sigma = 0`` (review Eq. 5). The same expression moves
  *up* in noise and is then the DDIM noise encoding of review Eq. 6 / Wolleb 2022.
* :func:`ddpm_step` — the ancestral step of Eq. 5 with ``sigma_t = eta * sigma_DDPM``
  (Song et al. 2021, Eq. 16); ``eta = 1`` on consecutive levels is DDPM's posterior.
* :func:`dpmpp_2m_step` — DPM-Solver++(2M) (Lu et al. 2022, Alg. 2): second-order
  multistep in log-SNR on data predictions, one network evaluation per step, reusing the
  previous step's prediction (the only state, carried explicitly as :class:`Multistep`).
  It runs in both directions, so it encodes as well as it samples.

:func:`encode` and :func:`decode` are the partial trajectories every reconstruction
method uses (``x_0 -> x_L`` and ``x_L -> x_0``); :func:`sample` starts from pure noise.
Network evaluations per image (NFE) are counted in :func:`transport` only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from anodiff.diffusion.guidance import EpsFn
from anodiff.diffusion.noise import draw_noise
from anodiff.diffusion.schedule import NoiseSchedule
from anodiff.errors import AnodiffError

Solver = Literal["ddim", "ddpm", "dpmpp2m"]
SOLVERS: tuple[str, ...] = ("ddim", "ddpm", "dpmpp2m")


@dataclass(frozen=True)
class SamplerOutput:
    """The end state of a trajectory and what it cost."""

    x: Tensor
    nfe: int  # network evaluations per image
    levels: tuple[int, ...]  # the levels visited, first to last


@dataclass(frozen=True)
class Multistep:
    """What DPM-Solver++(2M) remembers between steps: the last x0 prediction and its step."""

    x0: Tensor
    h: float  # lambda(level_to) - lambda(level_from) of the step that produced it


def level_sequence(start: int, end: int, steps: int) -> tuple[int, ...]:
    """``steps`` hops from ``start`` to ``end`` on evenly spaced integer levels (step skipping).

    Works in both directions. Asking for more hops than levels apart gives one hop per level.
    """
    if steps < 1:
        raise AnodiffError(f"steps must be >= 1, got {steps}")
    if start == end:
        return (start,)
    hops = min(steps, abs(end - start))
    levels = np.round(np.linspace(start, end, hops + 1)).astype(int)
    return tuple(int(v) for v in levels)


def ddim_step(
    x: Tensor, eps: Tensor, alpha_from: Tensor, sigma_from: Tensor, alpha_to: Tensor,
    sigma_to: Tensor,
) -> Tensor:
    """Deterministic DDIM update between two levels (either direction; Eq. 5 / Eq. 6).

    ``x0 = (x - sigma_from eps) / alpha_from``; ``x_to = alpha_to x0 + sigma_to eps``, with
    ``alpha = sqrt(abar)`` and ``sigma = sqrt(1 - abar)``.
    """
    x0 = (x - sigma_from * eps) / alpha_from
    return alpha_to * x0 + sigma_to * eps


def ddpm_step(
    x: Tensor, eps: Tensor, abar_from: Tensor, abar_to: Tensor, eta: float, noise: Tensor,
) -> Tensor:
    """Ancestral update toward less noise (review Eq. 5) with ``sigma_t`` scaled by ``eta``.

    ``sigma_t = eta * sqrt((1 - abar_to) / (1 - abar_from)) * sqrt(1 - abar_from / abar_to)``;
    ``eta = 0`` is DDIM, ``eta = 1`` on consecutive levels samples DDPM's posterior
    ``q(x_{l-1} | x_l, x0_hat)``. ``noise`` may be Gaussian or simplex (AnoDDPM).
    """
    sigma_t = eta * ((1 - abar_to) / (1 - abar_from) * (1 - abar_from / abar_to)).sqrt()
    x0 = (x - (1 - abar_from).sqrt() * eps) / abar_from.sqrt()
    direction = (1 - abar_to - sigma_t**2).clamp(min=0).sqrt() * eps
    return abar_to.sqrt() * x0 + direction + sigma_t * noise


def dpmpp_2m_step(
    x: Tensor,
    x0: Tensor,
    alpha_from: Tensor,
    sigma_from: Tensor,
    alpha_to: Tensor,
    sigma_to: Tensor,
    previous: Multistep | None,
) -> tuple[Tensor, Multistep]:
    """One DPM-Solver++(2M) step from data prediction ``x0`` (Lu et al. 2022, Alg. 2).

    ``h = lambda_to - lambda_from`` with ``lambda = log(alpha / sigma)``;
    ``D = (1 + 1/(2r)) x0 - 1/(2r) x0_prev`` with ``r = h_prev / h`` (first order, i.e. DDIM,
    when there is no previous step); ``x_to = (sigma_to / sigma_from) x - alpha_to
    (exp(-h) - 1) D``. A hop from or to level 0 (``sigma = 0``, ``lambda`` infinite) is first
    order: to level 0 this returns ``x0``; a hop *from* level 0 (encoding) is the DDIM step,
    taken by :func:`transport`, since the noise direction must come from the network's
    ``eps`` there. Returns the new state and what the next step needs.
    """
    if float(sigma_to.max()) == 0.0:  # into clean data: lambda_to is infinite, first order
        return alpha_to * x0, Multistep(x0=x0, h=float("inf"))
    h = float(torch.log(alpha_to / sigma_to) - torch.log(alpha_from / sigma_from))
    if previous is None or not math.isfinite(previous.h):
        d = x0
    else:
        r = previous.h / h
        d = (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * previous.x0
    x_to = (sigma_to / sigma_from) * x - alpha_to * math.expm1(-h) * d
    return x_to, Multistep(x0=x0, h=h)


@torch.no_grad()
def transport(
    eps_fn: EpsFn,
    x: Tensor,
    schedule: NoiseSchedule,
    levels: Sequence[int],
    solver: Solver = "ddim",
    *,
    eta: float = 1.0,
    noise: str = "gaussian",
    noise_options: dict[str, float] | None = None,
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> SamplerOutput:
    """Move ``x`` (at ``levels[0]``) through ``levels`` with one network evaluation per hop.

    ``solver``: ``ddim`` (deterministic, both directions), ``dpmpp2m`` (deterministic, both
    directions, second order) or ``ddpm`` (stochastic, toward less noise only; ``eta``,
    ``noise`` in {gaussian, simplex} and ``noise_options`` apply). The network is evaluated at
    the current state and level of every hop (explicit scheme, Eq. 6 for encoding). Runs
    without autograd (guidance wrappers that need a gradient enable it themselves).
    """
    if solver not in SOLVERS:
        raise AnodiffError(f"unknown solver {solver!r}; choose one of {list(SOLVERS)}")
    levels = tuple(schedule.check_level(v) for v in levels)
    if solver == "ddpm" and any(b >= a for a, b in zip(levels, levels[1:], strict=False)):
        raise AnodiffError("the ddpm solver only moves toward less noise; use ddim or dpmpp2m")
    abar = schedule.abar.to(x.device)
    n = x.shape[0]
    state: Multistep | None = None
    calls = 0
    hops = list(zip(levels, levels[1:], strict=False))
    for a, b in tqdm(hops, desc=f"{solver} {levels[0]}->{levels[-1]}", disable=not progress):
        level = torch.full((n,), a, device=x.device, dtype=torch.long)
        eps = eps_fn(x, level)
        calls += 1
        alpha_a, sigma_a = schedule.alpha_sigma(a, x)
        alpha_b, sigma_b = schedule.alpha_sigma(b, x)
        if solver == "ddim" or (solver == "dpmpp2m" and a == 0):
            x_next = ddim_step(x, eps, alpha_a, sigma_a, alpha_b, sigma_b)
            state = Multistep(x0=x, h=float("inf")) if solver == "dpmpp2m" else None
        elif solver == "dpmpp2m":
            x0 = (x - sigma_a * eps) / alpha_a
            x_next, state = dpmpp_2m_step(x, x0, alpha_a, sigma_a, alpha_b, sigma_b, state)
        else:
            z = draw_noise(
                noise, tuple(x.shape), level=b, generator=generator, device=x.device,
                dtype=x.dtype, **(noise_options or {}),
            )
            x_next = ddpm_step(x, eps, abar[a].to(x.dtype), abar[b].to(x.dtype), eta, z)
        x = x_next
    return SamplerOutput(x=x, nfe=calls * eps_fn.nfe_per_call, levels=levels)


def encode(
    eps_fn: EpsFn,
    x0: Tensor,
    schedule: NoiseSchedule,
    level: int,
    steps: int,
    solver: Solver = "ddim",
    *,
    from_level: int = 0,
    progress: bool = False,
) -> SamplerOutput:
    """Deterministic noise encoding (DDIM inversion) of ``x0`` up to ``level`` in ``steps`` hops.

    Review Eq. 6 applied for levels ``from_level ... level``; ``solver="dpmpp2m"`` uses the
    second-order multistep solver backwards in time (FNDM's encoder).
    """
    if solver == "ddpm":
        raise AnodiffError("encoding is deterministic: use solver ddim or dpmpp2m")
    if level < from_level:
        raise AnodiffError(f"encode: target level {level} is below the start {from_level}")
    return transport(
        eps_fn, x0, schedule, level_sequence(from_level, level, steps), solver, progress=progress
    )


def decode(
    eps_fn: EpsFn,
    x: Tensor,
    schedule: NoiseSchedule,
    level: int,
    steps: int,
    solver: Solver = "ddim",
    *,
    to_level: int = 0,
    eta: float = 1.0,
    noise: str = "gaussian",
    noise_options: dict[str, float] | None = None,
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> SamplerOutput:
    """Denoise ``x`` (at ``level``) down to ``to_level`` (default: clean) in ``steps`` hops."""
    if level < to_level:
        raise AnodiffError(f"decode: start level {level} is below the target {to_level}")
    return transport(
        eps_fn, x, schedule, level_sequence(level, to_level, steps), solver, eta=eta,
        noise=noise, noise_options=noise_options, generator=generator, progress=progress,
    )


def sample(
    eps_fn: EpsFn,
    shape: tuple[int, ...],
    schedule: NoiseSchedule,
    steps: int,
    solver: Solver = "ddim",
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    eta: float = 1.0,
    progress: bool = False,
) -> SamplerOutput:
    """Generate from pure Gaussian noise at level T (used e.g. by Baugh's restoration)."""
    x_t = torch.randn(shape, generator=generator).to(device or "cpu")
    return decode(
        eps_fn, x_t, schedule, schedule.num_steps, steps, solver, eta=eta, generator=generator,
        progress=progress,
    )
