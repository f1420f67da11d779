"""``autoencoder``: a small non-diffusion reconstruction baseline (a VAE on healthy slices).

The reconstruction-based family that diffusion methods replaced (Baur et al. 2021's
comparative study): a variational autoencoder (MONAI ``VarAutoEncoder``) trained on healthy
training slices only; the anomaly map is the absolute residual ``|x - x_hat|`` summed over
channels and lightly smoothed, the pseudo-healthy image is the reconstruction. It shares
the diffusion models' training loop (EMA, checkpoints, exact resume) and reports 1 network
evaluation per image.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from monai.networks.nets import VarAutoEncoder
from torch import Tensor, nn

from anodiff.diffusion.training import ArrayDataset, TrainConfig, Trainer
from anodiff.methods.base import AnomalyResult, Detector
from anodiff.methods.registry import register
from anodiff.methods.training_data import training_images
from anodiff.scoring.foreground import foreground
from anodiff.scoring.rules import calibrate_threshold, image_scores
from anodiff.scoring.smoothing import gaussian_smooth


@dataclass(frozen=True)
class AutoencoderConfig:
    """Network size, KL weight, and training settings of the VAE baseline."""

    channels: tuple[int, ...] = (32, 64, 128, 128)
    latent_size: int = 128
    kl_weight: float = 1e-3
    smoothing_sigma: float = 1.0  # Gaussian smoothing of the residual map (pixels)
    fpr: float = 0.01
    score_percentile: float = 99.0
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        steps=3000, batch_size=32, lr=1e-3, warmup_steps=50, ema_decay=0.99))


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
class AutoencoderDetector(Detector):
    supervision = "unsupervised"
    description = "variational autoencoder trained on healthy slices, residual map (baseline)"
    presets = {
        "quick": AutoencoderConfig(channels=(8, 16), latent_size=16, train=TrainConfig(
            steps=30, batch_size=8, lr=2e-3, warmup_steps=5, ema_decay=None)),
        "cpu": AutoencoderConfig(),
        "paper": AutoencoderConfig(channels=(64, 128, 256, 256), latent_size=512,
                                   train=TrainConfig(steps=20000, batch_size=64, lr=1e-4)),
    }

    def __init__(self, config: AutoencoderConfig) -> None:
        super().__init__(config)
        self.vae: nn.Module | None = None
        self.threshold = torch.tensor(float("inf"))

    def build(self, input_shape: tuple[int, ...]) -> None:
        super().build(input_shape)
        self.vae = VarAutoEncoder(
            spatial_dims=2, in_shape=self.input_shape, out_channels=self.input_shape[0],
            latent_size=self.config.latent_size, channels=self.config.channels,
            strides=(2,) * len(self.config.channels), use_mean_at_inference=True,
        )

    def networks(self) -> dict[str, nn.Module]:
        return {} if self.vae is None else {"vae": self.vae}

    def fit(self, data: object) -> None:
        images, _ = training_images(data, "unsupervised")
        torch.manual_seed(self.config.train.seed)
        self.build(tuple(images.shape[1:]))
        trainer = Trainer(self.vae, VAEObjective(self.config.kl_weight), self.config.train,
                          self.run_dir, {"method": self.name, "input_shape": self.input_shape})
        trainer.fit(ArrayDataset(images))
        self.vae = trainer.inference_model.eval()
        maps, _ = self._reconstruct(images)
        self.threshold = torch.tensor(calibrate_threshold(maps, foreground(images),
                                                          self.config.fpr))

    @torch.no_grad()
    def _reconstruct(self, images: Tensor) -> tuple[Tensor, Tensor]:
        assert self.vae is not None
        recon = torch.cat([self.vae(batch)[0] for batch in images.split(64)])
        residual = gaussian_smooth((images - recon).abs().sum(1), self.config.smoothing_sigma)
        fg = foreground(images)
        return torch.where(fg, residual, torch.zeros_like(residual)), recon

    def localize(self, images: Tensor) -> AnomalyResult:
        self.check_fitted()
        images = torch.as_tensor(images, dtype=torch.float32)
        maps, recon = self._reconstruct(images)
        fg = foreground(images)
        return AnomalyResult(anomaly_map=maps, pseudo_healthy=recon,
                             score=image_scores(maps, fg, "percentile",
                                                percentile=self.config.score_percentile),
                             mask=(maps > self.threshold) & fg, nfe=1)

    def state(self) -> dict[str, Tensor]:
        return {"threshold": self.threshold}

    def load_state(self, state: dict[str, Tensor]) -> None:
        self.threshold = state["threshold"]
