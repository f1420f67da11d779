"""Samplers that move an image between any two noise levels, in either direction.

One loop, :func:`transport`, walks a sequence of levels and applies one solver update per
hop, looked up by name in :data:`~.solvers.SOLVERS` (DDIM, ancestral DDPM, DPM-Solver++(2M);
see :mod:`.solvers`). :func:`encode` and :func:`decode` are the partial trajectories every
reconstruction method uses (``x_0 -> x_L`` and ``x_L -> x_0``); :func:`sample` starts from
pure noise. Network evaluations per image (NFE) are counted in :func:`transport` only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from anodiff.diffusion.guidance import EpsFn
from anodiff.diffusion.schedule import NoiseSchedule
from anodiff.diffusion.solvers import SOLVERS, Multistep, StepOptions
from anodiff.errors import AnodiffError
from anodiff.progress import progress_bar

Solver = str  # a name in SOLVERS: "ddim", "ddpm", "dpmpp2m"


@dataclass(frozen=True)
class SamplerOutput:
    """The end state of a trajectory and what it cost."""

    x: Tensor
    nfe: int  # network evaluations per image
    levels: tuple[int, ...]  # the levels visited, first to last


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
        raise AnodiffError(f"unknown solver {solver!r}; choose one of {sorted(SOLVERS)}")
    step = SOLVERS[solver]
    levels = tuple(schedule.check_level(v) for v in levels)
    if not step.both_directions and any(b >= a for a, b in zip(levels, levels[1:],
                                                               strict=False)):
        raise AnodiffError(f"the {solver} solver only moves toward less noise; use ddim or "
                           "dpmpp2m")
    options = StepOptions(eta, noise, noise_options or {}, generator)
    n = x.shape[0]
    state: Multistep | None = None
    calls = 0
    hops = list(zip(levels, levels[1:], strict=False))
    for a, b in progress_bar(hops, desc=f"{solver} {levels[0]}->{levels[-1]}", enabled=progress):
        eps = eps_fn(x, torch.full((n,), a, device=x.device, dtype=torch.long))
        calls += 1
        x, state = step.step(x, eps, a, b, schedule, state, options)
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
    if solver in SOLVERS and not SOLVERS[solver].both_directions:
        raise AnodiffError(f"encoding is deterministic: {solver} only removes noise; use "
                           "ddim or dpmpp2m")
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
