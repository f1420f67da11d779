"""The diffusion engine: the mathematics every method is composed of, nothing medical.

* :mod:`.schedule` — noise schedules, ``q_sample`` (review Eq. 2), posterior quantities;
* :mod:`.samplers` — DDPM, DDIM, DDIM encoding, DPM-Solver++(2M) both ways, step skipping;
* :mod:`.guidance` — noise predictors and guidance wrappers (concatenation, classes and
  classifier-free guidance, classifier gradients);
* :mod:`.noise` — Gaussian and batched simplex noise;
* :mod:`.objectives`, :mod:`.training`, :mod:`.ema`, :mod:`.checkpoint` — training with
  EMA, atomic checkpoints and exact resume.
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

__all__ = [
    "NoiseSchedule",
    "SamplerOutput",
    "class_conditioned",
    "classifier_guided",
    "classifier_logits",
    "concat_condition",
    "decode",
    "encode",
    "sample",
    "transport",
    "unet_eps",
]
