"""Translation: take an image to noise level L and back — the trajectory of every
reconstruction method, built from parts.

* an **encoder** takes ``x_0`` to ``x_L``: :class:`Inversion` (deterministic DDIM or
  DPM-Solver++ inversion, review Eq. 6; Wolleb 2022, FNDM) or :class:`Noising` (the forward
  process, Eq. 2, with Gaussian or simplex noise and no network; AnoDDPM, Wolleb's DDPM
  ablation);
* a **decoder**, :class:`Denoising`, takes ``x_L`` back to level 0 with any solver;
* the **guidance recipe** is the pair of noise predictors the method hands to
  :meth:`Translator.__call__` (guidance wrappers, :mod:`.guidance`), and a **condition
  provider** (:data:`ConditionProvider`) makes the channels a conditioned network sees next
  to the noisy image, from the image itself (FNDM's hybrid conditions; a study passes its
  own provider instead).

Random draws (the noising noise, ancestral steps) come from the caller's generator, on the
generator's device, so a CPU generator gives the same images on any device.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import torch
from torch import Tensor

from anodiff.diffusion.guidance import EpsFn
from anodiff.diffusion.noise import draw_noise
from anodiff.diffusion.samplers import SamplerOutput, Solver, decode, encode
from anodiff.diffusion.schedule import NoiseSchedule

# Images (N, C, H, W) -> condition channels (N, Cc, H, W) concatenated to the noisy image.
ConditionProvider = Callable[[Tensor], Tensor]


class Encoder(Protocol):
    """Takes clean images to the level a translation starts decoding from."""

    level: int

    def __call__(self, eps_fn: EpsFn, x: Tensor, schedule: NoiseSchedule,
                 generator: torch.Generator) -> SamplerOutput: ...


@dataclass(frozen=True)
class Inversion:
    """Deterministic encoding to ``level`` in ``steps`` hops with ``solver`` (ddim or
    dpmpp2m); one network evaluation per hop."""

    level: int
    steps: int
    solver: Solver = "ddim"

    def __call__(self, eps_fn: EpsFn, x: Tensor, schedule: NoiseSchedule,
                 generator: torch.Generator) -> SamplerOutput:
        return encode(eps_fn, x, schedule, self.level, self.steps, self.solver)


@dataclass(frozen=True)
class Noising:
    """``x_L = sqrt(abar_L) x_0 + sqrt(1 - abar_L) z`` with ``z`` of kind ``noise`` (Eq. 2);
    no network evaluation."""

    level: int
    noise: str = "gaussian"
    noise_options: dict[str, float] = field(default_factory=dict)

    def __call__(self, eps_fn: EpsFn, x: Tensor, schedule: NoiseSchedule,
                 generator: torch.Generator) -> SamplerOutput:
        z = draw_noise(self.noise, tuple(x.shape), level=self.level, generator=generator,
                       device=x.device, dtype=x.dtype, **self.noise_options)
        return SamplerOutput(x=schedule.q_sample(x, self.level, z), nfe=0,
                             levels=(0, self.level))


@dataclass(frozen=True)
class Denoising:
    """Decoding from ``level`` to clean data in ``steps`` hops with ``solver``; the ``ddpm``
    solver draws noise of kind ``noise`` scaled by ``eta`` in every hop."""

    level: int
    steps: int
    solver: Solver = "ddim"
    eta: float = 1.0
    noise: str = "gaussian"
    noise_options: dict[str, float] = field(default_factory=dict)

    def __call__(self, eps_fn: EpsFn, x: Tensor, schedule: NoiseSchedule,
                 generator: torch.Generator) -> SamplerOutput:
        return decode(eps_fn, x, schedule, self.level, self.steps, self.solver, eta=self.eta,
                      noise=self.noise, noise_options=self.noise_options, generator=generator)


@dataclass(frozen=True)
class Translator:
    """An encoder and a decoder: ``x -> x_L -> x_hat``."""

    encoder: Encoder
    decoder: Denoising

    def __call__(self, x: Tensor, encoder_eps: EpsFn, decoder_eps: EpsFn,
                 schedule: NoiseSchedule, generator: torch.Generator) -> tuple[Tensor, int]:
        """The translation of ``x`` and the network evaluations per image it cost; the
        encoder runs ``encoder_eps`` (unguided), the decoder ``decoder_eps`` (the recipe)."""
        encoded = self.encoder(encoder_eps, x, schedule, generator)
        decoded = self.decoder(decoder_eps, encoded.x, schedule, generator)
        return decoded.x, encoded.nfe + decoded.nfe
