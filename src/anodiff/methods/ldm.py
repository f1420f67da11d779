"""``ldm``: latent diffusion — a DDPM on the latents of an autoencoder (Pinaya et al. 2022a,
"Fast unsupervised brain anomaly detection and segmentation with diffusion models").

Latent diffusion (review Sec. 5.5) moves the diffusion model from pixels to the compact
latent space of an autoencoder trained on the same healthy slices: the network works on
(latent_channels, H/4, W/4) instead of (C, H, W), which is what makes 3-D volumes fit in
memory, and the decoder turns a denoised latent back into a pseudo-healthy image.

1. **Autoencoder** (healthy slices): MONAI ``AutoencoderKL``, L1 reconstruction plus
   ``kl_weight`` times the KL divergence of the latent posterior to N(0, I) (the MONAI
   generative tutorials' recipe, without their perceptual and adversarial losses: the
   perceptual loss needs ImageNet weights, which cannot be downloaded here).
2. **Latent DDPM**: the posterior means of the training slices, scaled to unit standard
   deviation (``latent_scale``, fitted once, as Rombach 2022 do), train a DDPM (ε-prediction,
   Gaussian noise) with the project's engine.
3. **Test**: encode ``x`` to its scaled mean latent, noise it to level L, denoise with
   ``steps`` hops of ``solver``, decode; the map is ``sum_c |x - x_hat|`` and ``x_hat`` the
   pseudo-healthy image.

NFE counts the latent UNet's evaluations (``steps``) by the share of an image's pixels its
input has (the package's convention, :class:`~anodiff.methods.results.AnomalyResult`): 25
hops on 16² latents of a 64² slice are 25 / 16 = 1.56 image evaluations. The autoencoder's
one encoding and one decoding per image are not diffusion steps (``counted``). Pinaya
2022a use a VQ-VAE and mask the residual with the latent's KL; this is the KL autoencoder
of MONAI's ``LatentDiffusionInferer`` and the plain residual (docs/methods/ldm.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from monai.networks.nets import AutoencoderKL
from torch import Tensor, nn

from anodiff.diffusion.guidance import unet_eps
from anodiff.diffusion.seeding import seeded
from anodiff.diffusion.training import ArrayDataset, TrainConfig, Trainer
from anodiff.diffusion.translation import Denoising, Noising, Translator
from anodiff.errors import AnodiffError
from anodiff.methods.base import Detector, LocalizationConfig
from anodiff.methods.parts import DiffusionPart, build_diffusion_unet, train_diffusion_unet
from anodiff.methods.registry import register
from anodiff.methods.results import RawResult
from anodiff.methods.training_data import training_images
from anodiff.scoring.residuals import absolute_residual


@dataclass(frozen=True)
class AutoencoderPart:
    """A MONAI ``AutoencoderKL``: ``channels`` per level (``len - 1`` halvings of the side),
    ``latent_channels``, ``num_res_blocks`` per level, GroupNorm groups, the KL weight and
    the training."""

    channels: tuple[int, ...] = (32, 64, 64)
    latent_channels: int = 3
    num_res_blocks: int = 1
    norm_num_groups: int = 16
    kl_weight: float = 1e-6
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        steps=1500, batch_size=32, lr=1e-3, warmup_steps=50, ema_decay=0.99))

    def __post_init__(self) -> None:
        if len(self.channels) < 1 or any(c % self.norm_num_groups for c in self.channels):
            raise AnodiffError(f"autoencoder.channels must be multiples of norm_num_groups "
                               f"{self.norm_num_groups}, got {list(self.channels)}")
        if self.latent_channels < 1 or self.num_res_blocks < 1 or not self.kl_weight >= 0:
            raise AnodiffError("need latent_channels >= 1, num_res_blocks >= 1, kl_weight >= 0")

    def build(self, channels: int) -> AutoencoderKL:
        """The (untrained) autoencoder for ``channels``-channel images."""
        levels = len(self.channels)
        return AutoencoderKL(
            spatial_dims=2, in_channels=channels, out_channels=channels,
            num_res_blocks=self.num_res_blocks, channels=self.channels,
            attention_levels=(False,) * levels, latent_channels=self.latent_channels,
            norm_num_groups=self.norm_num_groups, with_encoder_nonlocal_attn=False,
            with_decoder_nonlocal_attn=False)


@dataclass(frozen=True)
class KLAutoencoderObjective:
    """L1 reconstruction + ``kl_weight`` x KL(q(z | x) || N(0, I)), the KL summed over the
    latent and averaged over the batch (MONAI's generative tutorials)."""

    kl_weight: float

    def __call__(self, model: nn.Module, batch: dict[str, Tensor], generator: torch.Generator
                 ) -> Tensor:
        x = batch["image"]
        recon, mu, sigma = model(x)
        kl = 0.5 * (mu.square() + sigma.square() - torch.log(sigma.square() + 1e-12) - 1)
        return F.l1_loss(recon, x) + self.kl_weight * kl.flatten(1).sum(1).mean()

    def describe(self) -> dict[str, Any]:
        return {"objective": "kl_autoencoder", "kl_weight": self.kl_weight}


@dataclass(frozen=True)
class LDMConfig(LocalizationConfig):
    """The autoencoder, the latent DDPM and the test-time noising (module docstring)."""

    autoencoder: AutoencoderPart = field(default_factory=AutoencoderPart)
    diffusion: DiffusionPart = field(default_factory=lambda: DiffusionPart(
        net="cpu", num_steps=1000, max_level=500))
    level: int = 250
    steps: int = 25
    solver: Literal["ddpm", "ddim", "dpmpp2m"] = "ddpm"
    eta: float = 1.0
    smoothing_sigma: float = 1.0
    mask: Literal["otsu", "healthy_fpr", "own"] = "healthy_fpr"

    def check(self) -> None:
        super().check()
        top = self.diffusion.max_level or self.diffusion.num_steps
        for level in (self.level, *self.levels):
            if not 1 <= level <= top:
                raise AnodiffError(f"level must be in [1, {top}] (the levels the model is "
                                   f"trained on, diffusion.max_level), got {level}")
        if self.steps < 1 or not self.eta >= 0:
            raise AnodiffError(f"need steps >= 1 and eta >= 0, got {self.steps}, {self.eta}")


@register("ldm")
class LDM(Detector[LDMConfig]):
    supervision = "unsupervised"
    level_setting = "level"
    reconstructs = True
    description = "DDPM on the latents of a KL autoencoder, decoded reconstruction, " \
                  "residual map (Pinaya 2022a)"
    counted = ("unet",)
    presets = {
        "quick": LDMConfig(
            autoencoder=AutoencoderPart(channels=(8, 16), latent_channels=2, norm_num_groups=8,
                                        train=TrainConfig(steps=60, batch_size=16, lr=3e-3,
                                                          warmup_steps=5, ema_decay=None)),
            diffusion=DiffusionPart(net="quick", num_steps=100, max_level=80, train=TrainConfig(
                steps=80, batch_size=16, lr=3e-3, warmup_steps=10, ema_decay=0.9)),
            level=25, steps=10, smoothing_sigma=0.0, calibration_images=16),
        # Autoencoder 1,500 steps of batch 32, latent DDPM (cpu UNet on 16² x 3 latents at
        # 64² slices) 1,000 steps of batch 16. L = 25, chosen on the validation splits of the
        # tumour, stroke and WML tracks: within 0.016 pixel AP of each track's best level,
        # 0.18-0.40 above L = 250 (benchmarks/results/issue22_validation_levels.csv).
        "cpu": LDMConfig(level=25),
        # Already fast: 25 hops of a 16² latent cost 1.6 evaluations of a 64² UNet per slice.
        "fast": LDMConfig(level=25),
        # MONAI's brain LDM tutorial scale: 4 levels of (64, 128, 128, 128), latent 3.
        "paper": LDMConfig(
            autoencoder=AutoencoderPart(channels=(64, 128, 128, 128), num_res_blocks=2,
                                        norm_num_groups=32, train=TrainConfig(
                                            steps=100_000, batch_size=16, lr=1e-4,
                                            warmup_steps=0, ema_decay=0.999)),
            diffusion=DiffusionPart(net="paper", num_steps=1000, max_level=800, train=TrainConfig(
                steps=200_000, batch_size=16, lr=1e-4, warmup_steps=0, ema_decay=0.9999,
                checkpoint_every=5000)),
            steps=250, smoothing_sigma=0.0),
    }

    def __init__(self, config: LDMConfig) -> None:
        super().__init__(config)
        self.schedule = config.diffusion.noise_schedule()
        # 1 / std of the training latents (+inf until fitted: nothing is scaled before fit).
        self.register_buffer("latent_scale", torch.tensor(math.inf))

    def build(self, input_shape: tuple[int, ...]) -> None:
        super().build(input_shape)
        factor = 2 ** (len(self.config.autoencoder.channels) - 1)
        if any(side % factor for side in self.input_shape[1:]):
            raise AnodiffError(f"ldm: image sides {list(self.input_shape[1:])} must be "
                               f"divisible by {factor} (the autoencoder halves them "
                               f"{factor.bit_length() - 1} times)")
        with seeded(self.config.seed):
            self.autoencoder = self.config.autoencoder.build(self.input_shape[0])
            self.unet = build_diffusion_unet(self.config.diffusion,
                                             self.config.autoencoder.latent_channels)

    def encode(self, x: Tensor) -> Tensor:
        """The scaled posterior mean latent of images ``x`` in [0, 1]."""
        with torch.no_grad():
            return self.autoencoder.encode(x * 2 - 1)[0] * self.latent_scale

    def decode(self, z: Tensor) -> Tensor:
        """Images in [0, 1] from scaled latents."""
        with torch.no_grad():
            return ((self.autoencoder.decode(z / self.latent_scale) + 1) / 2).clamp(0, 1)

    def fit_parts(self, data: Any) -> None:
        """Train the autoencoder, fit the latent scale, train the latent DDPM (healthy
        training slices only)."""
        images, _ = training_images(data, self.supervision)
        self.prepare(tuple(images.shape[1:]))
        part = self.config.autoencoder
        trainer = Trainer(self.autoencoder, KLAutoencoderObjective(part.kl_weight), part.train,
                          None if self.run_dir is None else self.run_dir / "autoencoder",
                          {"part": "autoencoder", "channels": list(part.channels)})
        trainer.fit(ArrayDataset(images * 2 - 1))
        self.autoencoder = trainer.final_model().eval()
        self.latent_scale.fill_(1.0)
        latents = torch.cat([self.encode(chunk.to(self.device))
                             for chunk in images.split(self.config.batch_size)])
        self.latent_scale.fill_(1.0 / float(latents.std().clamp_min(1e-6)))
        self.unet = train_diffusion_unet(self.unet, self.config.diffusion,
                                         latents.cpu() * self.latent_scale.cpu(),
                                         run_dir=self.run_dir, name="unet")

    def step(self, x: Tensor, generator: torch.Generator) -> RawResult:
        """Encode, noise to L, denoise, decode; the map is the absolute residual."""
        c = self.config
        eps = unet_eps(self.unet)
        translate = Translator(Noising(c.level), Denoising(c.level, c.steps, c.solver, c.eta))
        z_hat, hops = translate(self.encode(x), eps, eps, self.schedule, generator)
        x_hat = self.decode(z_hat)
        share = z_hat.shape[-2] * z_hat.shape[-1] / (x.shape[-2] * x.shape[-1])
        return RawResult(anomaly_map=absolute_residual(x, x_hat), nfe=hops * share,
                         pseudo_healthy=x_hat)
