"""Inpainting with an unconditional diffusion model: RePaint's resampling (Lugmayr 2022).

The model fills a masked region while the rest of the image is known. Going down from level
``level`` to 0, every hop ``a -> b``:

1. one ancestral step of the model takes the current state to ``b`` (the unknown part);
2. the known image is noised to ``b`` with fresh noise (``q_sample``; at ``b = 0`` the image
   itself) and pasted outside the mask;
3. ``resamples - 1`` times, the pasted state is noised forward from ``b`` back to ``a``
   (``x_a = sqrt(abar_a / abar_b) x_b + sqrt(1 - abar_a / abar_b) z``) and steps 1–2 are
   repeated, so the generated part can harmonise with the known part around it.

AutoDDPM (Bercea 2023a) starts this from its own reconstruction noised to a low level and
uses it to replace the likely anomalous region. Step skipping (``steps`` hops) is an
addition for CPU budgets; the authors' code hops one level at a time.
"""

from __future__ import annotations

import torch
from torch import Tensor

from anodiff.diffusion.guidance import EpsFn
from anodiff.diffusion.noise import draw_noise
from anodiff.diffusion.samplers import SamplerOutput, level_sequence, transport
from anodiff.diffusion.schedule import NoiseSchedule
from anodiff.errors import AnodiffError


def forward_noise(x: Tensor, start: int, end: int, schedule: NoiseSchedule, z: Tensor) -> Tensor:
    """Noise ``x`` (at level ``start``) forward to the higher level ``end`` with noise ``z``:
    ``sqrt(abar_end / abar_start) x + sqrt(1 - abar_end / abar_start) z``."""
    if end < start:
        raise AnodiffError(f"forward noising goes up, got {start} -> {end}")
    alpha_start, _ = schedule.alpha_sigma(start, x)
    alpha_end, _ = schedule.alpha_sigma(end, x)
    ratio = (alpha_end / alpha_start).square()
    return ratio.sqrt() * x + (1 - ratio).clamp_min(0).sqrt() * z


@torch.no_grad()
def repaint(eps_fn: EpsFn, state: Tensor, known: Tensor, mask: Tensor, schedule: NoiseSchedule,
            level: int, steps: int, resamples: int, *, noise: str = "gaussian",
            noise_options: dict[str, float] | None = None,
            generator: torch.Generator | None = None) -> SamplerOutput:
    """Fill ``mask`` (bool, broadcastable to ``state``) of ``known`` (clean, in the model's
    range) starting from ``state`` at ``level``; ``steps`` hops down to 0, each done
    ``resamples`` times. NFE per image = hops x ``resamples``."""
    if resamples < 1:
        raise AnodiffError(f"resamples must be >= 1, got {resamples}")
    options = noise_options or {}

    def fresh(at: int) -> Tensor:
        return draw_noise(noise, tuple(state.shape), level=at, generator=generator,
                          device=state.device, dtype=state.dtype, **options)

    levels = level_sequence(level, 0, steps)
    nfe = 0
    for a, b in zip(levels, levels[1:], strict=False):
        for repeat in range(resamples):
            stepped = transport(eps_fn, state, schedule, (a, b), "ddpm", noise=noise,
                                noise_options=options, generator=generator)
            nfe += stepped.nfe
            context = known if b == 0 else schedule.q_sample(known, b, fresh(b))
            state = torch.where(mask, stepped.x, context)
            if repeat < resamples - 1:
                state = forward_noise(state, b, a, schedule, fresh(a))
    return SamplerOutput(x=state, nfe=nfe, levels=levels)
