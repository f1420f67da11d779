"""``thor``: the reverse trajectory steered back toward the input by intermediate anomaly
maps (Bercea 2024, "Diffusion models with implicit guidance for medical anomaly detection").

THOR (Temporal Harmonisation for Optimal Restoration; review Sec. 2.3 "implicit guidance",
Sec. 5.5) fights the review's *noise paradox* (Fig. 9): noise enough to erase a lesion also
erases healthy detail, so a plain reconstruction (AnoDDPM) differs from the input
everywhere. THOR keeps the healthy detail by looking at the input again on the way down:

1. train a DDPM on healthy slices (the same model as AnoDDPM, Gaussian or simplex noise);
2. noise the image to level L with noise ``z``: ``x_L = sqrt(abar_L) x + sqrt(1 - abar_L) z``;
3. denoise ancestrally; at each *harmonisation level* h (the reference: L = 250 and
   h in {200, 150, 100, 50} for simplex noise, L = 350 and {300, 150, 50} for Gaussian):

   - predict the clean image ``x0_hat`` from ``x_h`` and compute the intermediate map
     ``a_h = structure(x, x0_hat) * |x - x0_hat|``;
   - widen it into a region weight ``w = (dilate(close(a_h / max a_h)) + a_h / max a_h) / 2``
     (grey-level morphology, so a lesion's rim is replaced too);
   - *harmonise*: ``x0' = w x0_hat + (1 - w) x`` keeps the input where the map says healthy,
     and re-noise it to level h **with the same noise z**, then go on denoising;

4. the anomaly map is the harmonic mean of the intermediate maps and the final one (a
   pixel is anomalous only where every level agrees); the reconstruction is the
   pseudo-healthy image.

What differs from the authors' code (docs/methods/thor.md):

* **No LPIPS.** THOR weighs the residual by LPIPS (a SqueezeNet trained on ImageNet), whose
  weights cannot be downloaded here. The structural factor is ``1 - SSIM`` (scikit-image,
  the UPD window; :func:`~anodiff.scoring.residuals.structural_residual`) or nothing
  (``structure: none``), both measured in the card.
* **Maps keep their units.** The authors divide each intermediate map by its batch maximum,
  so a map's scale depends on what else is in the batch and a healthy slice's largest
  residual reads 1. Here only the blending weight is normalised (per image); the maps that
  are averaged stay in residual units, so one healthy-FPR threshold applies to every slice.
* **Step skipping.** The decoder makes ``steps`` ancestral hops spread over the segments
  between harmonisation levels (the authors: every level); each harmonisation costs one
  extra network evaluation (the ``x0_hat`` of the harmonised state), counted in the NFE.
* **Fewer maps in the mean.** The authors average the maps at every 50th level ("visualisation
  levels") as well; here the harmonisation levels and the final reconstruction, which need
  no extra network evaluation beyond the harmonisation's own.

Everything after the map (smoothing, foreground, healthy-FPR mask, score) is the shared
pipeline's (:mod:`anodiff.methods.base`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from scipy import ndimage
from torch import Tensor

from anodiff.diffusion.guidance import EpsFn, unet_eps
from anodiff.diffusion.noise import draw_noise
from anodiff.diffusion.samplers import decode
from anodiff.diffusion.training import TrainConfig
from anodiff.errors import AnodiffError
from anodiff.methods.noised_ddpm import AnoDDPMConfig, NoisedDDPM
from anodiff.methods.parts import DiffusionPart
from anodiff.methods.registry import register
from anodiff.methods.results import RawResult
from anodiff.scoring.residuals import structural_residual

# A map value this small counts as zero in the harmonic mean (which a zero anywhere zeroes).
TINY = 1e-8


@dataclass(frozen=True)
class ThorConfig(AnoDDPMConfig):
    """AnoDDPM's model, noise and decoder with THOR's harmonisation (module docstring).

    ``harmonise``: the levels, strictly decreasing, where the state is blended with the
    input and re-noised; those at or above ``level`` are not on the trajectory and are
    skipped (so the shared pipeline's ``levels`` can start lower), but at least one must be
    below it. ``structure``: the factor that weighs the residual
    in the intermediate maps (``ssim``: ``1 - SSIM`` with an ``ssim_window``-pixel window;
    ``none``: the residual alone). ``region_size``: the side in pixels of the grey closing
    and dilation that widen the blending weight (None: 13 px scaled from the authors' 128²
    slices to the image, odd).
    """

    level: int = 250
    harmonise: tuple[int, ...] = (200, 150, 100, 50)
    structure: Literal["ssim", "none"] = "ssim"
    ssim_window: int = 11
    region_size: int | None = None

    def check(self) -> None:
        super().check()
        h = self.harmonise
        if any(v < 1 for v in h) or any(a <= b for a, b in zip(h, h[1:], strict=False)):
            raise AnodiffError(f"harmonise must be strictly decreasing levels >= 1, got {list(h)}")
        for level in (self.level, *self.levels):
            used = self.harmonised_levels(level)
            if not used:
                raise AnodiffError(f"harmonise: no level below the noise level {level}, got "
                                   f"{list(h)}")
            if self.steps < len(used) + 1:
                raise AnodiffError(f"steps must be at least one hop per segment between "
                                   f"harmonisation levels ({len(used) + 1}), got {self.steps}")
        if self.structure == "ssim" and (self.ssim_window < 3 or self.ssim_window % 2 == 0):
            raise AnodiffError(f"ssim_window must be odd and >= 3, got {self.ssim_window}")
        if self.region_size is not None and self.region_size < 1:
            raise AnodiffError(f"region_size must be >= 1, got {self.region_size}")

    def harmonised_levels(self, level: int) -> tuple[int, ...]:
        """The harmonisation levels a trajectory from ``level`` passes (those below it)."""
        return tuple(v for v in self.harmonise if v < level)


def segment_hops(stops: tuple[int, ...], steps: int) -> list[int]:
    """Hops per segment between successive ``stops`` (L, h1, ..., 0): ``steps`` in all, spread
    in proportion to each segment's length (largest remainders round up), at least one each,
    never more than its levels."""
    lengths = np.array([a - b for a, b in zip(stops, stops[1:], strict=False)])
    shares = steps * lengths / lengths.sum()
    hops = np.maximum(1, np.floor(shares)).astype(int)
    # what flooring left goes to the largest remainders (Hamilton's apportionment)
    for i in np.argsort(-(shares - np.floor(shares)), kind="stable"):
        if hops.sum() >= steps:
            break
        hops[i] += 1
    return [int(min(n, length)) for n, length in zip(hops, lengths, strict=True)]


def region_weight(anomaly_map: Tensor, size: int) -> Tensor:
    """THOR's blending weight (N, 1, H, W) in [0, 1] from a map (N, H, W): the map over its
    per-image maximum, grey-closed and grey-dilated by a ``size`` square, averaged with
    itself (so the weight covers a lesion's rim and keeps its peak)."""
    peak = anomaly_map.flatten(1).amax(1).clamp_min(TINY)[:, None, None]
    weight = (anomaly_map / peak).clamp(0, 1).cpu().numpy()
    footprint = (1, size, size)
    widened = ndimage.grey_dilation(ndimage.grey_closing(weight, size=footprint, mode="nearest"),
                                    size=footprint, mode="nearest")
    region = torch.from_numpy((widened + weight) / 2).clamp(0, 1)
    return region.to(anomaly_map.device, anomaly_map.dtype)[:, None]


def harmonic_mean(maps: list[Tensor]) -> Tensor:
    """The pixel-wise harmonic mean of non-negative maps (0 wherever one map is 0)."""
    stacked = torch.stack(maps).clamp_min(TINY)
    return len(maps) / stacked.reciprocal().sum(0)


@register("thor")
class Thor(NoisedDDPM[ThorConfig]):
    supervision = "unsupervised"
    description = "AnoDDPM's trajectory harmonised with the input by intermediate anomaly " \
                  "maps, harmonic-mean map (Bercea 2024)"
    presets = {
        "quick": ThorConfig(
            diffusion=DiffusionPart(net="quick", num_steps=100, max_level=80, train=TrainConfig(
                steps=80, batch_size=16, lr=3e-3, warmup_steps=10, ema_decay=0.9)),
            level=40, harmonise=(30, 20, 10), steps=12, ssim_window=5, smoothing_sigma=0.0,
            calibration_images=16),
        # The reference's simplex settings (L = 250, harmonised at 200 ... 50) on AnoDDPM's
        # cpu model (1000 training steps of batch 16, ~13 min on 2 cores); 25 hops + 4.
        "cpu": ThorConfig(),
        # The same ancestral trajectory in 10 hops instead of 25, plus the 4 harmonisations'
        # own evaluations: 14 network evaluations per slice (DDIM hops lose pixel AP: the card).
        "fast": ThorConfig(steps=10),
        # The reference's Gaussian settings, every level decoded, on AnoDDPM's paper model.
        "paper": ThorConfig(
            diffusion=DiffusionPart(net="paper", num_steps=1000, max_level=800, train=TrainConfig(
                steps=300_000, batch_size=1, lr=1e-4, warmup_steps=0, ema_decay=0.9999,
                checkpoint_every=5000)),
            noise="gaussian", level=350, harmonise=(300, 150, 50), steps=350,
            smoothing_sigma=0.0),
    }

    def region_size(self) -> int:
        """The closing/dilation side: the setting, or 13 px per 128 px of image side, odd."""
        if self.config.region_size is not None:
            return self.config.region_size
        assert self.input_shape is not None
        side = round(13 * min(self.input_shape[1:]) / 128)
        return max(1, side + (side + 1) % 2)

    def intermediate_map(self, x: Tensor, x_hat: Tensor) -> Tensor:
        """``structure(x, x_hat) * sum_c |x - x_hat|`` (N, H, W), images in [0, 1]."""
        c = self.config
        return structural_residual(x, x_hat, c.ssim_window if c.structure == "ssim" else None)

    def harmonised_decode(self, x: Tensor, eps: EpsFn, generator: torch.Generator
                          ) -> tuple[Tensor, list[Tensor], int]:
        """THOR's trajectory for images ``x`` in [0, 1]: the reconstruction in [0, 1], the
        intermediate maps (one per harmonisation level, then the final one) and the NFE."""
        c, options = self.config, self.noise_options()
        x0 = x * 2 - 1
        z = draw_noise(c.noise, tuple(x.shape), level=c.level, generator=generator,
                       device=x.device, dtype=x.dtype, **options)
        state = self.schedule.q_sample(x0, c.level, z)
        stops = (c.level, *c.harmonised_levels(c.level), 0)
        maps: list[Tensor] = []
        nfe = 0
        for start, stop, hops in zip(stops, stops[1:], segment_hops(stops, c.steps),
                                     strict=False):
            out = decode(eps, state, self.schedule, start, hops, c.solver, to_level=stop,
                         eta=c.eta, noise=c.noise, noise_options=options, generator=generator)
            state, nfe = out.x, nfe + out.nfe
            if stop == 0:
                break
            level = torch.full((x.shape[0],), stop, device=x.device, dtype=torch.long)
            with torch.no_grad():
                x0_hat = self.schedule.predict_x0(state, stop, eps(state, level)).clamp(-1, 1)
            nfe += eps.nfe_per_call
            maps.append(self.intermediate_map(x, (x0_hat + 1) / 2))
            weight = region_weight(maps[-1], self.region_size())
            state = self.schedule.q_sample(weight * x0_hat + (1 - weight) * x0, stop, z)
        x_hat = ((state + 1) / 2).clamp(0, 1)
        maps.append(self.intermediate_map(x, x_hat))
        return x_hat, maps, nfe

    def step(self, x: Tensor, generator: torch.Generator) -> RawResult:
        """One harmonised trajectory per image: the map is the harmonic mean of the
        intermediate maps, the reconstruction the pseudo-healthy image."""
        x_hat, maps, nfe = self.harmonised_decode(x, unet_eps(self.unet), generator)
        return RawResult(anomaly_map=harmonic_mean(maps), nfe=nfe, pseudo_healthy=x_hat)
