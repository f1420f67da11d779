"""``autoddpm``: mask, stitch and re-sample (Bercea et al. 2023a, "Mask, Stitch, and
Re-Sample: Enhancing Robustness and Generalizability in Anomaly Detection through Automatic
Diffusion Models").

AutoDDPM (review Sec. 2.3 "implicit guidance", Sec. 5.5) repairs AnoDDPM's two failure
modes: healthy detail lost to noise, and lesions that survive it. On the same DDPM:

1. **reconstruct** at level L (AnoDDPM's forward-backward pass);
2. **mask**: the likely anomalous pixels are those where ``structure(x, x_rec) * r`` exceeds
   ``mask_threshold``, with ``r`` the residual ``sum_c |x - x_rec|`` divided by its
   per-image ``mask_percentile`` (95th) percentile and clipped to [0, 1]; the mask is dilated
   by a 3 x 3 square ``dilation`` times;
3. **stitch and re-sample**: start from the reconstruction noised to the low level
   ``inpaint_level``, then RePaint (:mod:`anodiff.diffusion.inpainting`): the input outside
   the mask, the model's ancestral steps inside it, each hop repeated ``resamples`` times;
4. **map**: ``sum_c |x - x_inpainted| * structure(x, x_rec) * r`` (zero outside the mask,
   where the inpainted image is the input); the inpainted image is the pseudo-healthy one.

What differs from the authors' code (docs/methods/autoddpm.md): ``1 - SSIM`` replaces LPIPS
(whose ImageNet weights cannot be downloaded; ``structure: none`` drops the factor), and the
reconstruction and the inpainting skip levels (``steps`` and ``inpaint_steps`` hops; the
authors decode every level). Everything after the map is the shared pipeline's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from scipy import ndimage
from torch import Tensor

from anodiff.diffusion.guidance import EpsFn, unet_eps
from anodiff.diffusion.inpainting import repaint
from anodiff.diffusion.noise import draw_noise
from anodiff.diffusion.training import TrainConfig
from anodiff.errors import AnodiffError
from anodiff.methods.noised_ddpm import AnoDDPMConfig, NoisedDDPM
from anodiff.methods.parts import DiffusionPart
from anodiff.methods.registry import register
from anodiff.methods.results import RawResult
from anodiff.scoring.residuals import absolute_residual, structural_change


@dataclass(frozen=True)
class AutoDDPMConfig(AnoDDPMConfig):
    """AnoDDPM's model, noise and first reconstruction (``level``, ``steps``, ``solver``) with
    AutoDDPM's masking and re-sampling (module docstring)."""

    level: int = 200
    inpaint_level: int = 50
    inpaint_steps: int = 5
    resamples: int = 4
    mask_threshold: float = 0.1
    mask_percentile: float = 95.0
    dilation: int = 1
    structure: Literal["ssim", "none"] = "ssim"
    ssim_window: int = 11

    def check(self) -> None:
        super().check()
        if not 1 <= self.inpaint_level <= min((self.level, *self.levels)):
            raise AnodiffError(f"inpaint_level must be in [1, level], got {self.inpaint_level}")
        if self.inpaint_steps < 1 or self.resamples < 1 or self.dilation < 0:
            raise AnodiffError("need inpaint_steps >= 1, resamples >= 1 and dilation >= 0")
        if not 0 < self.mask_percentile <= 100 or not self.mask_threshold >= 0:
            raise AnodiffError("need 0 < mask_percentile <= 100 and mask_threshold >= 0")
        if self.structure == "ssim" and (self.ssim_window < 3 or self.ssim_window % 2 == 0):
            raise AnodiffError(f"ssim_window must be odd and >= 3, got {self.ssim_window}")


@register("autoddpm")
class AutoDDPM(NoisedDDPM[AutoDDPMConfig]):
    supervision = "unsupervised"
    description = "AnoDDPM's reconstruction, likely anomalies masked and re-sampled " \
                  "(RePaint) from the stitched image (Bercea 2023a)"
    presets = {
        "quick": AutoDDPMConfig(
            diffusion=DiffusionPart(net="quick", num_steps=100, max_level=80, train=TrainConfig(
                steps=80, batch_size=16, lr=3e-3, warmup_steps=10, ema_decay=0.9)),
            level=40, steps=10, inpaint_level=10, inpaint_steps=3, resamples=2,
            mask_threshold=0.5, ssim_window=5, smoothing_sigma=0.0, calibration_images=16),
        # AnoDDPM's cpu model (simplex, ~13 min of training); L = 200 in 25 hops, then 5
        # inpainting hops from 50, each 4 times: 45 network evaluations per slice. The mask
        # threshold is the authors' (for LPIPS); with 1 - SSIM it may mask far more (the
        # quick model on toy brains: 96 % of healthy brain at 0.1, 26-33 % at 0.5).
        "cpu": AutoDDPMConfig(),
        # AnoDDPM's fast reconstruction (one DDIM hop from L), then the 5 inpainting hops done
        # twice instead of 4 times: 11 network evaluations per slice (the card).
        "fast": AutoDDPMConfig(solver="ddim", steps=1, resamples=2),
        # The reference: L = 200 and inpainting from 50, every level decoded, 5 resamples.
        "paper": AutoDDPMConfig(
            diffusion=DiffusionPart(net="paper", num_steps=1000, max_level=800, train=TrainConfig(
                steps=300_000, batch_size=1, lr=1e-4, warmup_steps=0, ema_decay=0.9999,
                checkpoint_every=5000)),
            noise="gaussian", steps=200, inpaint_steps=50, resamples=5, smoothing_sigma=0.0),
    }

    def structure(self, x: Tensor, x_hat: Tensor) -> Tensor:
        """The residual's structural weight (N, H, W): ``1 - SSIM`` or 1."""
        if self.config.structure == "none":
            return torch.ones_like(x[:, 0])
        return structural_change(x, x_hat, self.config.ssim_window)

    def first_map(self, x: Tensor, x_rec: Tensor) -> Tensor:
        """``structure * r`` (N, H, W) in [0, 1]: the residual over its per-image percentile,
        clipped, weighted by the structural change."""
        residual = absolute_residual(x, x_rec)
        scale = torch.quantile(residual.flatten(1), self.config.mask_percentile / 100, dim=1)
        normalised = (residual / scale.clamp_min(1e-8)[:, None, None]).clamp(0, 1)
        return self.structure(x, x_rec) * normalised

    def likely_anomalous(self, first: Tensor) -> Tensor:
        """(N, 1, H, W) bool: ``first > mask_threshold``, dilated by a 3 x 3 square."""
        mask = (first > self.config.mask_threshold).cpu().numpy()
        if self.config.dilation:
            mask = ndimage.binary_dilation(mask, structure=ndimage.generate_binary_structure(
                2, 2)[None], iterations=self.config.dilation)
        return torch.from_numpy(mask).to(first.device)[:, None]

    def resample(self, x: Tensor, x_rec: Tensor, mask: Tensor, eps: EpsFn,
                 generator: torch.Generator) -> tuple[Tensor, int]:
        """The inpainted image in [0, 1] (input outside ``mask``) and its NFE."""
        c, options = self.config, self.noise_options()
        start = draw_noise(c.noise, tuple(x.shape), level=c.inpaint_level, generator=generator,
                           device=x.device, dtype=x.dtype, **options)
        state = self.schedule.q_sample(x_rec * 2 - 1, c.inpaint_level, start)
        out = repaint(eps, state, x * 2 - 1, mask, self.schedule, c.inpaint_level,
                      c.inpaint_steps, c.resamples, noise=c.noise, noise_options=options,
                      generator=generator)
        inpainted = ((out.x + 1) / 2).clamp(0, 1)
        return torch.where(mask, inpainted, x), out.nfe  # the input itself outside the mask

    def step(self, x: Tensor, generator: torch.Generator) -> RawResult:
        """Reconstruct, mask, re-sample; the map is the inpainting's residual weighted by
        the first map."""
        eps = unet_eps(self.unet)
        x_rec, nfe = self.translator()(x * 2 - 1, eps, eps, self.schedule, generator)
        x_rec = ((x_rec + 1) / 2).clamp(0, 1)
        first = self.first_map(x, x_rec)
        inpainted, more = self.resample(x, x_rec, self.likely_anomalous(first), eps, generator)
        return RawResult(anomaly_map=absolute_residual(x, inpainted) * first, nfe=nfe + more,
                         pseudo_healthy=inpainted)
