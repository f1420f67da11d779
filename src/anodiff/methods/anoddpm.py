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

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor

from anodiff.diffusion.guidance import unet_eps
from anodiff.diffusion.seeding import seeded
from anodiff.diffusion.training import TrainConfig
from anodiff.diffusion.translation import Denoising, Noising, Translator
from anodiff.errors import AnodiffError
from anodiff.methods.base import Detector, LocalizationConfig
from anodiff.methods.parts import DiffusionPart, build_diffusion_unet, train_diffusion_unet
from anodiff.methods.registry import register
from anodiff.methods.results import RawResult
from anodiff.methods.training_data import training_images
from anodiff.scoring.residuals import squared_residual


@dataclass(frozen=True)
class AnoDDPMConfig(LocalizationConfig):
    """The diffusion model, the test-time corruption and the decoder (and, from
    :class:`~anodiff.methods.base.LocalizationConfig`, the map's post-processing, mask and
    score: smoothing 1 px and the healthy-FPR mask by default).

    ``octaves`` / ``frequency`` of the simplex noise default to the image size: the first
    octave's period is a quarter of the image side (AnoDDPM: 64 px at 256²) and octaves are
    added down to a finest period of 2 px (6 octaves at 256², 4 at 64²).
    """

    diffusion: DiffusionPart = field(default_factory=lambda: DiffusionPart(
        net="cpu", num_steps=1000, max_level=400))
    noise: Literal["simplex", "gaussian"] = "simplex"
    octaves: int | None = None  # simplex octaves (None: down to a 2-pixel period)
    persistence: float = 0.8  # amplitude ratio between successive simplex octaves
    frequency: float | None = None  # period in pixels of the first octave (None: side / 4)
    level: int = 100  # L, the test-time noise level (the paper: 250; 100 measured best here)
    steps: int = 25  # decoder hops from L to 0 (>= L: every level, as AnoDDPM)
    solver: Literal["ddpm", "ddim", "dpmpp2m"] = "ddpm"
    eta: float = 1.0  # stochasticity of the ddpm solver (1: ancestral sampling)
    smoothing_sigma: float = 1.0
    mask: Literal["otsu", "healthy_fpr", "own"] = "healthy_fpr"

    def check(self) -> None:
        super().check()
        part = self.diffusion
        top = part.max_level or part.num_steps
        for level in (self.level, *self.levels):
            if not 1 <= level <= top:
                raise AnodiffError(f"level must be in [1, {top}] (the levels the model is "
                                   f"trained on, diffusion.max_level), got {level}")
        if self.steps < 1:
            raise AnodiffError(f"steps must be >= 1, got {self.steps}")
        if self.octaves is not None and self.octaves < 1:
            raise AnodiffError(f"octaves must be >= 1, got {self.octaves}")
        if self.frequency is not None and not self.frequency > 0:
            raise AnodiffError(f"frequency must be > 0, got {self.frequency}")
        if not 0 < self.persistence <= 1 or not self.eta >= 0:
            raise AnodiffError("need 0 < persistence <= 1 and eta >= 0")


def noise_options(config: AnoDDPMConfig, size: int) -> dict[str, float]:
    """Simplex settings for images whose shorter side is ``size`` pixels ({} for Gaussian).

    AnoDDPM's 6 octaves, persistence 0.8 and a first period of 64 px are for 256² slices;
    scaled to the image, the first period is ``size / 4`` and, unless set, octaves halve the
    period down to 2 px, so that none falls below the pixel grid at small sizes.
    """
    if config.noise == "gaussian":
        return {}
    frequency = config.frequency if config.frequency is not None else size / 4
    octaves = config.octaves
    if octaves is None:
        octaves = max(1, min(6, math.floor(math.log2(max(frequency, 2.0) / 2)) + 1))
    return {"octaves": octaves, "persistence": config.persistence, "frequency": frequency}


@register("anoddpm")
class AnoDDPM(Detector[AnoDDPMConfig]):
    supervision = "self"
    level_setting = "level"
    reconstructs = True
    description = "partial simplex noising + ancestral DDPM denoising, squared error " \
                  "(Wyatt 2022)"
    counted = ("unet",)
    presets = {
        "quick": AnoDDPMConfig(
            diffusion=DiffusionPart(net="quick", num_steps=100, max_level=80, train=TrainConfig(
                steps=80, batch_size=16, lr=3e-3, warmup_steps=10, ema_decay=0.9)),
            level=25, steps=25, smoothing_sigma=0.0, calibration_images=16),
        # 1000 steps of batch 16: ~0.8 s each on an idle 2-core machine, ~13 minutes.
        "cpu": AnoDDPMConfig(),
        # The reference run (test_args of the authors' code): batch 1, 3000 epochs of 100
        # images, AdamW 1e-4, gradient clipping 1, EMA; every level decoded, no smoothing.
        "paper": AnoDDPMConfig(
            diffusion=DiffusionPart(net="paper", num_steps=1000, max_level=800, train=TrainConfig(
                steps=300_000, batch_size=1, lr=1e-4, warmup_steps=0, ema_decay=0.9999,
                checkpoint_every=5000)),
            octaves=6, level=250, steps=250, smoothing_sigma=0.0),
    }

    def __init__(self, config: AnoDDPMConfig) -> None:
        super().__init__(config)
        self.schedule = config.diffusion.noise_schedule()

    def build(self, input_shape: tuple[int, ...]) -> None:
        super().build(input_shape)
        with seeded(self.config.seed):
            self.unet = build_diffusion_unet(self.config.diffusion, self.input_shape[0])

    def noise_options(self) -> dict[str, float]:
        """The simplex settings for the fitted image size."""
        assert self.input_shape is not None
        return noise_options(self.config, min(self.input_shape[1:]))

    def fit_parts(self, data: Any) -> None:
        """Train the DDPM on healthy training slices (with the configured noise)."""
        images, _ = training_images(data, self.supervision)
        self.prepare(tuple(images.shape[1:]))
        self.unet = train_diffusion_unet(
            self.unet, self.config.diffusion, images * 2 - 1, noise=self.config.noise,
            noise_options=self.noise_options(), run_dir=self.run_dir, name="unet")

    def translator(self) -> Translator:
        """AnoDDPM's forward-backward pass: noise to L with the configured noise, decode to 0
        drawing the same kind of noise in every ancestral step (the level is simplex noise's
        third coordinate)."""
        c, options = self.config, self.noise_options()
        return Translator(Noising(c.level, c.noise, options),
                          Denoising(c.level, c.steps, c.solver, c.eta, c.noise, options))

    def step(self, x: Tensor, generator: torch.Generator) -> RawResult:
        """One forward-backward pass of the batch: the map is the squared error
        ``sum_c (x - x_hat)^2`` (AnoDDPM), the reconstruction the pseudo-healthy image (the
        shared pipeline averages ``samples`` such draws)."""
        eps = unet_eps(self.unet)
        x_hat, nfe = self.translator()(x * 2 - 1, eps, eps, self.schedule, generator)
        x_hat = ((x_hat + 1) / 2).clamp(0, 1)
        return RawResult(anomaly_map=squared_residual(x, x_hat), nfe=nfe, pseudo_healthy=x_hat)
