"""``threshold``: the intensity baseline the field forgets (Meissen 2021).

Meissen et al. showed that thresholding histogram-equalised FLAIR intensities beats many
deep methods on hyperintense lesions. This Detector offers three maps:

* ``bright`` — the histogram-equalised intensity (Meissen's map; lesions brighter than all
  tissue, e.g. FLAIR hyperintensities);
* ``dark`` — one minus it (hypointense lesions, e.g. T1 necrosis);
* ``rarity`` (default) — ``-log p(intensity)`` under the healthy training intensity
  histogram of each channel, summed over channels: polarity-free, so it is fair to lesions
  of either sign (shared/notes/cpu-calibration.md: report both polarities or this).

The map is the method's whole step; the shared pipeline masks it at the value reached by
``fpr`` of the healthy validation pixels (``mask: healthy_fpr``) and scores an image by the
99th percentile of its foreground map.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np
import torch
from skimage.exposure import equalize_hist
from torch import Tensor

from anodiff.data.layouts import sequence_name
from anodiff.errors import AnodiffError
from anodiff.methods.base import Detector, LocalizationConfig
from anodiff.methods.registry import register
from anodiff.methods.results import RawResult
from anodiff.methods.training_data import training_images


@dataclass(frozen=True)
class ThresholdConfig(LocalizationConfig):
    """Settings of the intensity baseline: the map ``mode``, the ``channel`` it reads (None:
    all; a sequence name such as ``flair`` becomes its index when the detector is fitted on
    named data) and the ``bins`` of the healthy histogram (``rarity``)."""

    mode: Literal["bright", "dark", "rarity"] = "rarity"
    channel: int | str | None = None  # one channel (flair, or its index) or None for all
    bins: int = 64  # histogram bins on [0, 1] for ``rarity``
    mask: Literal["otsu", "healthy_fpr", "own"] = "healthy_fpr"

    def check(self) -> None:
        super().check()
        if self.mode not in ("bright", "dark", "rarity"):
            raise AnodiffError(f"mode must be bright, dark or rarity, got {self.mode!r}")
        if isinstance(self.channel, int) and self.channel < 0:
            raise AnodiffError(f"channel must be >= 0 or a sequence name, got {self.channel}")
        if self.bins < 2:
            raise AnodiffError(f"bins must be >= 2, got {self.bins}")


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
class ThresholdDetector(Detector[ThresholdConfig]):
    supervision = "unsupervised"
    description = "intensity thresholding after histogram equalisation (Meissen 2021) or " \
                  "healthy-intensity rarity"
    presets = {name: ThresholdConfig() for name in ("quick", "cpu", "fast", "paper")}

    @classmethod
    def with_sequences(cls, config: ThresholdConfig, sequences: Sequence[str]) -> ThresholdConfig:
        """A ``channel`` given by name (``flair``, ``FLAIR``, ``T2w``) as its index."""
        if not isinstance(config.channel, str):
            return config
        names = [sequence_name(s) for s in sequences]
        wanted = sequence_name(config.channel)
        if wanted not in names:
            raise AnodiffError(f"channel '{config.channel}': the data has the sequences "
                               f"{list(sequences)}; name one of them")
        return replace(config, channel=names.index(wanted))

    def build(self, input_shape: tuple[int, ...]) -> None:
        super().build(input_shape)
        channel = self.config.channel
        if isinstance(channel, str):
            raise AnodiffError(f"{self.name}: channel '{channel}' is a sequence name, but the "
                               "data has no sequence names (a tensor, or an images dataset); "
                               "give the channel's index")
        if channel is not None and channel >= self.input_shape[0]:
            raise AnodiffError(f"{self.name}: channel {channel} does not exist; the data has "
                               f"{self.input_shape[0]} channel(s), numbered from 0")
        # (C, bins): -log p_healthy per channel and bin (rarity), fitted by fit_parts.
        self.register_buffer("log_density", torch.zeros(0))

    def _channels(self, images: Tensor) -> Tensor:
        return images if self.config.channel is None else images[:, [self.config.channel]]

    def fit_parts(self, data: Any) -> None:
        """The healthy intensity histogram of each channel (Laplace-smoothed), for rarity."""
        images, _ = training_images(data, "unsupervised")
        self.prepare(tuple(images.shape[1:]))
        fg = self.brain(images)
        x = self._channels(images)
        density = []
        for c in range(x.shape[1]):
            values = x[:, c][fg].clamp(0, 1)
            counts = torch.histc(values, bins=self.config.bins, min=0, max=1) + 1  # Laplace
            density.append(-torch.log(counts / counts.sum()))
        self.log_density = torch.stack(density).to(self.device)

    def step(self, x: Tensor, generator: torch.Generator) -> RawResult:
        """The map of the configured mode (no network: NFE 0)."""
        channels = self._channels(x)
        if self.config.mode == "rarity":
            bins = (channels.clamp(0, 1) * self.config.bins).long().clamp(max=self.config.bins - 1)
            per_channel = torch.stack([self.log_density[c][bins[:, c]]
                                       for c in range(channels.shape[1])], 1)
            return RawResult(anomaly_map=per_channel.sum(1), nfe=0)
        eq = equalised(channels.cpu(), self.brain(x).cpu()).mean(1)
        return RawResult(anomaly_map=eq if self.config.mode == "bright" else 1 - eq, nfe=0)
