"""``anoddpm``: partial noising with simplex noise and ancestral denoising (Wyatt 2022).

AnoDDPM (Wyatt, Leach, Schmon & Willcocks, "AnoDDPM: Anomaly Detection with Denoising
Diffusion Probabilistic Models using Simplex Noise", CVPR Workshops 2022; review Sec. 5.4):

1. train a DDPM on healthy slices only, with multi-scale *simplex* noise in place of
   Gaussian noise and levels drawn from [1, max_level] (the paper: t < 800 of T = 1000);
2. at test time noise the image to level L with the same kind of noise (L = 250),
   ``x_L = sqrt(abar_L) x_0 + sqrt(1 - abar_L) z``;
3. denoise ancestrally back to level 0, drawing simplex noise in every step;
4. anomaly map = squared error ``sum_c (x - x_hat)^2``; the reconstruction is the
   pseudo-healthy image.

Simplex noise puts its energy at low spatial frequencies, so the corruption hides whole
blobs and the model learns to repair lesion-sized structures, not pixel speckle; the review
calls this a hybrid of anomaly simulation (self-supervision) and healthy-prior denoising.

The forward-backward pass is a translation (:mod:`anodiff.diffusion.translation`): the
encoder is :class:`~anodiff.diffusion.translation.Noising` with simplex noise, the decoder
:class:`~anodiff.diffusion.translation.Denoising` with the same noise.

Additions beyond the paper, each a setting: fast deterministic decoders (``ddim``,
``dpmpp2m``) and level skipping; the shared pipeline's ``samples`` noise draws and
``levels`` (averaged maps, or the ``zscore`` of the input against the reconstructions),
Gaussian smoothing, foreground, and a mask at a healthy false-positive rate calibrated on
healthy validation slices (or per-image Otsu); a ``seed`` that makes ``localize``
reproducible. Images are mapped from [0, 1] to the model's [-1, 1] and back; the map is in
[0, 1] intensity units. docs/methods/anoddpm.md lists what differs.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from anodiff.diffusion.distillation import DecoderSegment
from anodiff.diffusion.guidance import unet_eps
from anodiff.diffusion.training import TrainConfig
from anodiff.errors import AnodiffError
from anodiff.methods.noised_ddpm import AnoDDPMConfig, NoisedDDPM, noise_options
from anodiff.methods.parts import DiffusionPart
from anodiff.methods.registry import register
from anodiff.methods.results import RawResult
from anodiff.methods.training_data import training_images
from anodiff.scoring.residuals import squared_residual

__all__ = ["AnoDDPM", "AnoDDPMConfig", "noise_options"]


@register("anoddpm")
class AnoDDPM(NoisedDDPM[AnoDDPMConfig]):
    supervision = "self"
    description = "partial simplex noising + ancestral DDPM denoising, squared error " \
                  "(Wyatt 2022)"
    presets = {
        "quick": AnoDDPMConfig(
            diffusion=DiffusionPart(net="quick", num_steps=100, max_level=80, train=TrainConfig(
                steps=80, batch_size=16, lr=3e-3, warmup_steps=10, ema_decay=0.9)),
            level=25, steps=25, smoothing_sigma=0.0, calibration_images=16),
        # 1000 steps of batch 16: ~0.8 s each on an idle 2-core machine, ~13 minutes.
        "cpu": AnoDDPMConfig(),
        # cpu's model and level, decoded in one DDIM hop (the model's x0 prediction from L):
        # 1 network evaluation instead of 25, and a higher pixel AP than the 25 ancestral
        # hops on the full tumour and stroke splits (docs/BENCHMARKS.md, "Issue 23"). A cpu
        # run takes it with `anodiff export RUN --preset fast --refit DATA`.
        "fast": AnoDDPMConfig(solver="ddim", steps=1),
        # The reference run (test_args of the authors' code): batch 1, 3000 epochs of 100
        # images, AdamW 1e-4, gradient clipping 1, EMA; every level decoded, no smoothing.
        "paper": AnoDDPMConfig(
            diffusion=DiffusionPart(net="paper", num_steps=1000, max_level=800, train=TrainConfig(
                steps=300_000, batch_size=1, lr=1e-4, warmup_steps=0, ema_decay=0.9999,
                checkpoint_every=5000)),
            octaves=6, level=250, steps=250, smoothing_sigma=0.0),
    }

    def step(self, x: Tensor, generator: torch.Generator) -> RawResult:
        """One forward-backward pass of the batch: the map is the squared error
        ``sum_c (x - x_hat)^2`` (AnoDDPM), the reconstruction the pseudo-healthy image (the
        shared pipeline averages ``samples`` such draws)."""
        eps = unet_eps(self.unet)
        x_hat, nfe = self.translator()(x * 2 - 1, eps, eps, self.schedule, generator)
        x_hat = ((x_hat + 1) / 2).clamp(0, 1)
        return RawResult(anomaly_map=squared_residual(x, x_hat), nfe=nfe, pseudo_healthy=x_hat)

    def decoder_segment(self) -> DecoderSegment:
        """What ``anodiff distill`` replaces: the UNet decoding from L in ``steps`` hops,
        through states noised with the model's own noise."""
        if self.config.levels:
            raise AnodiffError("anoddpm: a few-step student decodes from one L; distil a run "
                               "without `levels`")
        return DecoderSegment(unet_eps(self.unet), self.unet, self.schedule, self.config.level,
                              self.config.steps, self.config.noise, self.noise_options())

    def distillation_images(self, data: Any) -> Tensor:
        """The healthy training slices, in the DDPM's [-1, 1]."""
        images, _ = training_images(data, self.supervision)
        return images * 2 - 1

    def with_student(self, student: nn.Module, steps: int) -> AnoDDPM:
        """The student replaces the UNet and decodes deterministically (DDIM) in its own
        ``steps`` hops."""
        distilled = self.retuned(keep_state=True, solver="ddim", steps=steps)
        distilled.unet = student
        return distilled
