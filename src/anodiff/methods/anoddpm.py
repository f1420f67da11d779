"""``anoddpm``: partial noising with simplex noise and ancestral denoising (Wyatt et al. 2022).

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

Additions beyond the paper, each a setting: fast deterministic decoders (``ddim``,
``dpmpp2m``) and level skipping; averaging the map over ``samples`` noise draws (their
per-pixel standard deviation is the result's ``uncertainty``); optional Gaussian smoothing;
the map is zeroed outside the brain foreground; a mask at a healthy false-positive rate
calibrated on healthy training images (or per-image Otsu); a ``seed`` that makes
``localize`` reproducible. Images are mapped from [0, 1] to the model's [-1, 1] and back;
the map is in [0, 1] intensity units. docs/methods/anoddpm.md lists what differs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor, nn

from anodiff.diffusion.guidance import EpsFn, unet_eps
from anodiff.diffusion.noise import draw_noise
from anodiff.diffusion.samplers import SamplerOutput, decode
from anodiff.diffusion.schedule import NoiseSchedule
from anodiff.diffusion.training import TrainConfig
from anodiff.errors import AnodiffError
from anodiff.methods.autoencoder import gaussian_smooth
from anodiff.methods.base import AnomalyResult, Detector, register
from anodiff.methods.common import foreground, healthy_threshold, image_scores, training_images
from anodiff.methods.parts import DiffusionPart, build_diffusion_unet, train_diffusion_unet
from anodiff.scoring.thresholds import per_image_otsu

# Images per network batch in localize: bounds memory on large inputs. The seeded generator
# is consumed chunk after chunk, so a given input always gets the same noise.
_CHUNK = 32


@dataclass(frozen=True)
class AnoDDPMConfig:
    """The diffusion model, the test-time corruption, the decoder and the map's post-processing.

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
    samples: int = 1  # noise draws averaged per image (NFE per image = steps x samples)
    smoothing_sigma: float = 1.0  # Gaussian smoothing of the map in pixels (0: none)
    mask: Literal["healthy_fpr", "otsu"] = "healthy_fpr"
    fpr: float = 0.01  # healthy pixel false-positive rate of the mask
    calibration_images: int = 64  # healthy training images the threshold is calibrated on
    score_percentile: float = 99.0  # image score = this percentile of the foreground map
    seed: int = 0  # seeds the noise of localize (and of the calibration)

    def check(self) -> None:
        """Reject settings that cannot work, naming the setting (called at construction)."""
        part = self.diffusion
        top = part.max_level or part.num_steps
        if not 1 <= self.level <= top:
            raise AnodiffError(f"anoddpm: level must be in [1, {top}] (the levels the model "
                               f"is trained on, diffusion.max_level), got {self.level}")
        for name in ("steps", "samples", "calibration_images"):
            if getattr(self, name) < 1:
                raise AnodiffError(f"anoddpm: {name} must be >= 1, got {getattr(self, name)}")
        if self.octaves is not None and self.octaves < 1:
            raise AnodiffError(f"anoddpm: octaves must be >= 1, got {self.octaves}")
        if self.frequency is not None and self.frequency <= 0:
            raise AnodiffError(f"anoddpm: frequency must be > 0, got {self.frequency}")
        if not 0 < self.persistence <= 1 or self.eta < 0 or self.smoothing_sigma < 0:
            raise AnodiffError("anoddpm: need 0 < persistence <= 1, eta >= 0 and "
                               "smoothing_sigma >= 0")
        if not 0 < self.fpr < 1 or not 0 <= self.score_percentile <= 100:
            raise AnodiffError("anoddpm: need 0 < fpr < 1 and 0 <= score_percentile <= 100")


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


def reconstruct(
    eps_fn: EpsFn, x0: Tensor, schedule: NoiseSchedule, config: AnoDDPMConfig,
    options: dict[str, float], generator: torch.Generator,
) -> SamplerOutput:
    """AnoDDPM's forward-backward pass: noise ``x0`` (in [-1, 1]) to level L, decode to 0.

    The corruption is ``q_sample`` with noise of the configured kind drawn at level L (the
    level is simplex noise's third coordinate); the ``ddpm`` decoder draws the same kind of
    noise at every step, as the paper does.
    """
    z = draw_noise(config.noise, tuple(x0.shape), level=config.level, generator=generator,
                   device=x0.device, dtype=x0.dtype, **options)
    x_l = schedule.q_sample(x0, config.level, z)
    return decode(eps_fn, x_l, schedule, config.level, config.steps, config.solver,
                  eta=config.eta, noise=config.noise, noise_options=options,
                  generator=generator)


@register("anoddpm")
class AnoDDPM(Detector):
    supervision = "self"
    description = "partial simplex noising + ancestral DDPM denoising, squared error " \
                  "(Wyatt 2022)"
    state_free_settings = frozenset({"mask", "score_percentile"})
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
        config.check()
        super().__init__(config)
        self.unet: nn.Module | None = None
        self.threshold = torch.tensor(float("inf"))

    def build(self, input_shape: tuple[int, ...]) -> None:
        super().build(input_shape)
        self.unet = build_diffusion_unet(self.config.diffusion, self.input_shape[0])

    def networks(self) -> dict[str, nn.Module]:
        return {} if self.unet is None else {"unet": self.unet}

    def _noise_options(self) -> dict[str, float]:
        assert self.input_shape is not None
        return noise_options(self.config, min(self.input_shape[1:]))

    def fit(self, data: object) -> None:
        """Train the DDPM on healthy training slices, then calibrate the mask's threshold."""
        images, _ = training_images(data, self.supervision)
        torch.manual_seed(self.config.diffusion.train.seed)
        self.build(tuple(images.shape[1:]))
        assert self.unet is not None
        self.unet = train_diffusion_unet(
            self.unet, self.config.diffusion, images * 2 - 1, noise=self.config.noise,
            noise_options=self._noise_options(), run_dir=self.run_dir, name="unet")
        if self.config.mask == "healthy_fpr":
            pick = torch.randperm(len(images), generator=torch.Generator().manual_seed(
                self.config.seed))[: self.config.calibration_images]
            maps, _, _, _ = self._maps(images[pick])
            self.threshold = torch.tensor(healthy_threshold(
                maps, foreground(images[pick]), self.config.fpr))

    @torch.no_grad()
    def _maps(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor, int]:
        """Mean map, its standard deviation over draws, mean reconstruction, NFE per image.

        Each of ``samples`` draws is one forward-backward pass; its map is the squared error
        summed over channels (AnoDDPM), smoothed if configured. Maps are zero outside the
        foreground.
        """
        assert self.unet is not None
        cfg = self.config
        device = next(self.unet.parameters()).device
        eps_fn = unet_eps(self.unet)
        schedule = cfg.diffusion.noise_schedule()
        options = self._noise_options()
        generator = torch.Generator(device=device).manual_seed(cfg.seed)
        maps, spread, recons = [], [], []
        nfe = 0
        for chunk in images.split(_CHUNK):
            x = chunk.to(device)
            draws, recon, nfe = [], torch.zeros_like(x), 0
            for _ in range(cfg.samples):
                out = reconstruct(eps_fn, x * 2 - 1, schedule, cfg, options, generator)
                x_hat = ((out.x + 1) / 2).clamp(0, 1)
                recon += x_hat / cfg.samples
                draws.append(gaussian_smooth((x - x_hat).square().sum(1), cfg.smoothing_sigma))
                nfe += out.nfe
            stacked = torch.stack(draws)
            maps.append(stacked.mean(0).cpu())
            spread.append(stacked.std(0, correction=0).cpu())
            recons.append(recon.cpu())
        fg = foreground(images)
        zero = torch.zeros(())
        return (torch.where(fg, torch.cat(maps), zero), torch.where(fg, torch.cat(spread), zero),
                torch.cat(recons), nfe)

    def localize(self, images: Tensor) -> AnomalyResult:
        """Maps, reconstructions, masks and scores for images (N, C, H, W) in [0, 1]."""
        self.check_fitted()
        images = torch.as_tensor(images, dtype=torch.float32)
        if images.dim() != 4 or len(images) == 0 or tuple(images.shape[1:]) != self.input_shape:
            raise AnodiffError(f"anoddpm: expected images (N, *{self.input_shape}), got "
                               f"{tuple(images.shape)}")
        maps, spread, recon, nfe = self._maps(images)
        fg = foreground(images)
        if self.config.mask == "otsu":
            mask = torch.from_numpy(per_image_otsu(maps.numpy(), fg.numpy()))
        else:
            mask = (maps > self.threshold) & fg
        return AnomalyResult(
            anomaly_map=maps, score=image_scores(maps, fg, self.config.score_percentile),
            nfe=nfe, pseudo_healthy=recon, mask=mask,
            uncertainty=spread if self.config.samples > 1 else None)

    def state(self) -> dict[str, Tensor]:
        return {"threshold": self.threshold}

    def load_state(self, state: dict[str, Tensor]) -> None:
        self.threshold = state["threshold"]
