"""The solvers: one update between two noise levels each, registered under their name.

Every solver is a function with one signature, :class:`SolverStep`::

    step(x, eps, start, end, schedule, state, options) -> (x_next, state)

moving ``x`` from level ``start`` to level ``end`` given the network's noise estimate
``eps`` at ``(x, start)``. ``x0`` always comes from the schedule's own
:meth:`~.schedule.NoiseSchedule.predict_x0`; ``state`` is what a multistep solver carries
between hops (explicitly, no hidden state); ``options`` the stochastic solvers' noise.
:func:`~.samplers.transport` looks the solver up in :data:`SOLVERS`, so a new solver is one
function and one ``@solver`` line. The update equations themselves are plain functions of
explicit values, checked in the tests against closed forms and MONAI's schedulers:

* :func:`ddim_step` — DDIM with ``sigma = 0`` (review Eq. 5); moving *up* in noise it is the
  DDIM noise encoding of review Eq. 6 / Wolleb 2022.
* :func:`ddpm_step` — the ancestral step of Eq. 5 with ``sigma_t = eta * sigma_DDPM``
  (Song 2021, Eq. 16); ``eta = 1`` on consecutive levels is DDPM's posterior.
* :func:`dpmpp_2m_step` — DPM-Solver++(2M) (Lu 2022, Alg. 2): second-order
  multistep in log-SNR on data predictions, reusing the previous hop's prediction.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import torch
from torch import Tensor

from anodiff.diffusion.noise import draw_noise
from anodiff.diffusion.schedule import NoiseSchedule


@dataclass(frozen=True)
class Multistep:
    """What DPM-Solver++(2M) remembers between steps: the last x0 prediction and its step."""

    x0: Tensor
    h: float  # lambda(level_to) - lambda(level_from) of the step that produced it


@dataclass(frozen=True)
class StepOptions:
    """The noise of stochastic solvers: ``eta`` scales it, ``noise`` is its kind
    (gaussian or simplex, with ``noise_options``), drawn from ``generator``."""

    eta: float = 1.0
    noise: str = "gaussian"
    noise_options: dict[str, float] = field(default_factory=dict)
    generator: torch.Generator | None = None


class SolverStep(Protocol):
    """One hop of a solver (module docstring)."""

    def __call__(self, x: Tensor, eps: Tensor, start: int, end: int, schedule: NoiseSchedule,
                 state: Multistep | None, options: StepOptions
                 ) -> tuple[Tensor, Multistep | None]: ...


@dataclass(frozen=True)
class Solver:
    """A registered solver: its step and whether it moves both ways (deterministic ones do;
    ancestral sampling only removes noise)."""

    step: SolverStep
    both_directions: bool


SOLVERS: dict[str, Solver] = {}


def solver(name: str, *, both_directions: bool) -> Callable[[SolverStep], SolverStep]:
    """Register a step function under ``name`` (decorator)."""

    def add(step: SolverStep) -> SolverStep:
        if name in SOLVERS:
            raise ValueError(f"solver {name!r} is registered twice")
        SOLVERS[name] = Solver(step, both_directions)
        return step

    return add


def ddim_step(x0: Tensor, eps: Tensor, alpha_to: Tensor, sigma_to: Tensor) -> Tensor:
    """Deterministic DDIM update (Eq. 5 / Eq. 6): ``x_to = alpha_to x0 + sigma_to eps``,
    with ``alpha = sqrt(abar)`` and ``sigma = sqrt(1 - abar)``; either direction."""
    return alpha_to * x0 + sigma_to * eps


def ddpm_step(x0: Tensor, eps: Tensor, abar_from: Tensor, abar_to: Tensor, eta: float,
              noise: Tensor) -> Tensor:
    """Ancestral update toward less noise (review Eq. 5) with ``sigma_t`` scaled by ``eta``.

    ``sigma_t = eta * sqrt((1 - abar_to) / (1 - abar_from)) * sqrt(1 - abar_from / abar_to)``;
    ``eta = 0`` is DDIM, ``eta = 1`` on consecutive levels samples DDPM's posterior
    ``q(x_{l-1} | x_l, x0)``. ``noise`` may be Gaussian or simplex (AnoDDPM).
    """
    sigma_t = eta * ((1 - abar_to) / (1 - abar_from) * (1 - abar_from / abar_to)).sqrt()
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
    """One DPM-Solver++(2M) step from data prediction ``x0`` (Lu 2022, Alg. 2).

    ``h = lambda_to - lambda_from`` with ``lambda = log(alpha / sigma)``;
    ``D = (1 + 1/(2r)) x0 - 1/(2r) x0_prev`` with ``r = h_prev / h`` (first order, i.e. DDIM,
    when there is no previous step); ``x_to = (sigma_to / sigma_from) x - alpha_to
    (exp(-h) - 1) D``. A hop to level 0 (``sigma = 0``, ``lambda`` infinite) is first order
    and returns ``x0``; a hop *from* level 0 (encoding) is the DDIM step (see
    :func:`dpmpp2m`), since the noise direction must come from the network's ``eps``.
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


@solver("ddim", both_directions=True)
def ddim(x: Tensor, eps: Tensor, start: int, end: int, schedule: NoiseSchedule,
         state: Multistep | None, options: StepOptions) -> tuple[Tensor, Multistep | None]:
    """DDIM (deterministic, both directions)."""
    alpha_to, sigma_to = schedule.alpha_sigma(end, x)
    return ddim_step(schedule.predict_x0(x, start, eps), eps, alpha_to, sigma_to), None


@solver("dpmpp2m", both_directions=True)
def dpmpp2m(x: Tensor, eps: Tensor, start: int, end: int, schedule: NoiseSchedule,
            state: Multistep | None, options: StepOptions) -> tuple[Tensor, Multistep | None]:
    """DPM-Solver++(2M) (deterministic, both directions; a hop from clean data is DDIM's)."""
    if start == 0:
        x_next, _ = ddim(x, eps, start, end, schedule, None, options)
        return x_next, Multistep(x0=x, h=float("inf"))
    alpha_from, sigma_from = schedule.alpha_sigma(start, x)
    alpha_to, sigma_to = schedule.alpha_sigma(end, x)
    return dpmpp_2m_step(x, schedule.predict_x0(x, start, eps), alpha_from, sigma_from,
                         alpha_to, sigma_to, state)


@solver("ddpm", both_directions=False)
def ddpm(x: Tensor, eps: Tensor, start: int, end: int, schedule: NoiseSchedule,
         state: Multistep | None, options: StepOptions) -> tuple[Tensor, Multistep | None]:
    """Ancestral sampling (stochastic, toward less noise only): Gaussian or simplex noise
    drawn at the target level."""
    z = draw_noise(options.noise, tuple(x.shape), level=end, generator=options.generator,
                   device=x.device, dtype=x.dtype, **options.noise_options)
    abar = schedule.abar.to(x.device)
    return ddpm_step(schedule.predict_x0(x, start, eps), eps, abar[start].to(x.dtype),
                     abar[end].to(x.dtype), options.eta, z), None
