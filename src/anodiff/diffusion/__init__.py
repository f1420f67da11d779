"""The diffusion engine: the mathematics every method is composed of, nothing medical.

* :mod:`.schedule` — noise schedules, ``q_sample`` (review Eq. 2), posterior quantities;
* :mod:`.solvers` — the registry of one-hop updates (DDIM, DDPM, DPM-Solver++(2M));
* :mod:`.samplers` — trajectories over any levels with any solver: encoding, decoding,
  sampling, step skipping;
* :mod:`.translation` — encoders (inversion, noising) and decoders composed into a
  translation ``x -> x_L -> x_hat``, with condition providers;
* :mod:`.guidance` — noise predictors and guidance wrappers (concatenation, classes and
  classifier-free guidance, classifier gradients);
* :mod:`.noise` — Gaussian and batched simplex noise;
* :mod:`.objectives`, :mod:`.training`, :mod:`.ema`, :mod:`.checkpoint` — training with
  EMA, atomic checkpoints and exact resume; :mod:`.seeding` — seeded blocks that leave the
  caller's random state alone;
* :mod:`.distillation` — progressive distillation of a method's DDIM decoder into a
  few-step student (``anodiff distill``);
* :mod:`.engine` — how networks run at test time: precision (bfloat16 autocast where it
  pays) and the images per network call, chosen per process and logged.
"""

from anodiff.diffusion.guidance import (
    class_conditioned,
    classifier_guided,
    classifier_logits,
    concat_condition,
    unet_eps,
)
from anodiff.diffusion.samplers import SamplerOutput, decode, encode, sample, transport
from anodiff.diffusion.schedule import NoiseSchedule
from anodiff.diffusion.solvers import SOLVERS, solver
from anodiff.diffusion.translation import Denoising, Inversion, Noising, Translator

__all__ = [
    "SOLVERS",
    "Denoising",
    "Inversion",
    "NoiseSchedule",
    "Noising",
    "Translator",
    "SamplerOutput",
    "class_conditioned",
    "classifier_guided",
    "classifier_logits",
    "concat_condition",
    "decode",
    "encode",
    "sample",
    "solver",
    "transport",
    "unet_eps",
]
