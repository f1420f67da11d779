"""``autoencoder``: a small non-diffusion reconstruction baseline (a VAE on healthy slices).

The reconstruction-based family that diffusion methods replaced (Baur 2021's
comparative study): a variational autoencoder (MONAI ``VarAutoEncoder``) trained on healthy
training slices only; its step is the absolute residual ``|x - x_hat|`` summed over
channels, and the pseudo-healthy image is the reconstruction. The shared pipeline smooths
the map (1 px), zeroes it outside the brain, masks it at the healthy-FPR threshold and
scores it by its 99th percentile. It shares the diffusion models' training loop (EMA,
checkpoints, exact resume) and reports 1 network evaluation per image.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from monai.networks.nets import VarAutoEncoder
from torch import Tensor, nn

from anodiff.diffusion.seeding import seeded
from anodiff.diffusion.training import ArrayDataset, TrainConfig, Trainer
from anodiff.methods.base import Detector, LocalizationConfig
from anodiff.methods.registry import register
from anodiff.methods.results import RawResult
from anodiff.methods.training_data import training_images
from anodiff.scoring.residuals import absolute_residual


@dataclass(frozen=True)
class AutoencoderConfig(LocalizationConfig):
    """Network size, KL weight and training of the VAE baseline (and the shared rules:
    smoothing 1 px and the healthy-FPR mask by default)."""

    channels: tuple[int, ...] = (32, 64, 128, 128)
    latent_size: int = 128
    kl_weight: float = 1e-3
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        steps=3000, batch_size=32, lr=1e-3, warmup_steps=50, ema_decay=0.99))
    smoothing_sigma: float = 1.0
    mask: Literal["otsu", "healthy_fpr", "own"] = "healthy_fpr"
    batch_size: int = 64


@dataclass(frozen=True)
class VAEObjective:
    """Reconstruction MSE plus ``kl_weight`` times the KL divergence to N(0, I) (per pixel)."""

    kl_weight: float

    def __call__(self, model: nn.Module, batch: dict[str, Tensor], generator: torch.Generator
                 ) -> Tensor:
        x = batch["image"]
        recon, mu, logvar, _ = model(x)
        kl = -0.5 * torch.mean(1 + logvar - mu**2 - logvar.exp())
        return F.mse_loss(recon, x) + self.kl_weight * kl

    def describe(self) -> dict[str, Any]:
        return {"objective": "vae", "kl_weight": self.kl_weight}


@register("autoencoder")
class AutoencoderDetector(Detector[AutoencoderConfig]):
    supervision = "unsupervised"
    reconstructs = True
    description = "variational autoencoder trained on healthy slices, residual map (baseline)"
    counted = ("vae",)
    presets = {
        "quick": AutoencoderConfig(channels=(8, 16), latent_size=16, train=TrainConfig(
            steps=30, batch_size=8, lr=2e-3, warmup_steps=5, ema_decay=None)),
        "cpu": AutoencoderConfig(),
        "fast": AutoencoderConfig(),  # one network evaluation already: the cpu preset
        "paper": AutoencoderConfig(channels=(64, 128, 256, 256), latent_size=512,
                                   train=TrainConfig(steps=20000, batch_size=64, lr=1e-4)),
    }

    def build(self, input_shape: tuple[int, ...]) -> None:
        super().build(input_shape)
        with seeded(self.config.seed):
            self.vae = VarAutoEncoder(
                spatial_dims=2, in_shape=self.input_shape, out_channels=self.input_shape[0],
                latent_size=self.config.latent_size, channels=self.config.channels,
                strides=(2,) * len(self.config.channels), use_mean_at_inference=True)

    def fit_parts(self, data: Any) -> None:
        """Train the VAE on healthy training slices (checkpoints under ``run_dir``)."""
        images, _ = training_images(data, self.supervision)
        self.prepare(tuple(images.shape[1:]))
        trainer = Trainer(self.vae, VAEObjective(self.config.kl_weight), self.config.train,
                          self.run_dir, {"method": self.name, "input_shape": self.input_shape})
        trainer.fit(ArrayDataset(images))
        self.vae = trainer.inference_model.eval()

    def step(self, x: Tensor, generator: torch.Generator) -> RawResult:
        """One pass of the VAE; the map is ``sum_c |x - x_hat|``."""
        recon = self.vae(x)[0]
        return RawResult(anomaly_map=absolute_residual(x, recon), nfe=1, pseudo_healthy=recon)
