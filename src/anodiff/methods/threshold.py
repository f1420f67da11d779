"""``threshold``: the intensity baseline the field forgets (Meissen et al. 2021).

Meissen et al. showed that thresholding histogram-equalised FLAIR intensities beats many
deep methods on hyperintense lesions. This Detector offers three maps:

* ``bright`` — the histogram-equalised intensity (Meissen's map; lesions brighter than all
  tissue, e.g. FLAIR hyperintensities);
* ``dark`` — one minus it (hypointense lesions, e.g. T1 necrosis);
* ``rarity`` (default) — ``-log p(intensity)`` under the healthy training intensity
  histogram of each channel, summed over channels: polarity-free, so it is fair to lesions
  of either sign (shared/notes/cpu-calibration.md: report both polarities or this).

The method's mask thresholds the map at the value exceeded by ``fpr`` of healthy training
pixels; the image score is the 99th percentile of the map inside the foreground.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from skimage.exposure import equalize_hist
from torch import Tensor

from anodiff.methods.base import AnomalyResult, Detector, register
from anodiff.methods.common import foreground, healthy_threshold, image_scores, training_images


@dataclass(frozen=True)
class ThresholdConfig:
    """Settings of the intensity baseline."""

    mode: Literal["bright", "dark", "rarity"] = "rarity"
    channel: int | None = None  # one channel (e.g. FLAIR's index) or None for all
    bins: int = 64  # histogram bins on [0, 1] for ``rarity``
    fpr: float = 0.01  # healthy false-positive rate of the method's own mask
    score_percentile: float = 99.0


def equalised(images: Tensor, fg: Tensor) -> Tensor:
    """Histogram-equalise every image and channel over its foreground (scikit-image)."""
    out = torch.zeros_like(images)
    for i in range(images.shape[0]):
        mask = fg[i].numpy()
        if not mask.any():
            continue
        for c in range(images.shape[1]):
            eq = equalize_hist(images[i, c].numpy(), nbins=256, mask=mask)
            out[i, c] = torch.from_numpy(np.where(mask, eq, 0).astype(np.float32))
    return out


@register("threshold")
class ThresholdDetector(Detector):
    supervision = "unsupervised"
    description = "intensity thresholding after histogram equalisation (Meissen 2021) or " \
                  "healthy-intensity rarity"
    presets = {name: ThresholdConfig() for name in ("quick", "cpu", "paper")}

    def __init__(self, config: ThresholdConfig) -> None:
        super().__init__(config)
        self.log_density = torch.zeros(0)  # (C, bins): -log p_healthy per channel and bin
        self.threshold = torch.tensor(float("inf"))

    def _channels(self, images: Tensor) -> Tensor:
        return images if self.config.channel is None else \
            images[:, [self.config.channel]]

    def _maps(self, images: Tensor) -> Tensor:
        fg = foreground(images)
        x = self._channels(images)
        if self.config.mode == "rarity":
            bins = (x.clamp(0, 1) * self.config.bins).long().clamp(max=self.config.bins - 1)
            per_channel = torch.stack([self.log_density[c][bins[:, c]]
                                       for c in range(x.shape[1])], 1)
            maps = per_channel.sum(1)
        else:
            eq = equalised(x, fg).mean(1)
            maps = eq if self.config.mode == "bright" else 1 - eq
        return torch.where(fg, maps, torch.zeros_like(maps))

    def fit(self, data: object) -> None:
        images, _ = training_images(data, "unsupervised")
        self.build(tuple(images.shape[1:]))
        fg = foreground(images)
        x = self._channels(images)
        density = []
        for c in range(x.shape[1]):
            values = x[:, c][fg].clamp(0, 1)
            counts = torch.histc(values, bins=self.config.bins, min=0, max=1) + 1  # Laplace
            density.append(-torch.log(counts / counts.sum()))
        self.log_density = torch.stack(density)
        self.threshold = torch.tensor(healthy_threshold(self._maps(images), fg, self.config.fpr))

    def localize(self, images: Tensor) -> AnomalyResult:
        self.check_fitted()
        images = torch.as_tensor(images, dtype=torch.float32)
        maps = self._maps(images)
        fg = foreground(images)
        return AnomalyResult(
            anomaly_map=maps,
            score=image_scores(maps, fg, self.config.score_percentile),
            mask=(maps > self.threshold) & fg,
            nfe=0,
        )

    def state(self) -> dict[str, Tensor]:
        return {"log_density": self.log_density, "threshold": self.threshold}

    def load_state(self, state: dict[str, Tensor]) -> None:
        self.log_density, self.threshold = state["log_density"], state["threshold"]
