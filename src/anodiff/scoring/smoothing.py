"""Gaussian smoothing of anomaly maps (the shared post-processing chain's one filter).

Written in torch rather than taken from scipy or MONAI because it runs on the detector's
device inside :meth:`anodiff.methods.base.Detector.localize` and on batches of maps; MONAI's
``GaussianFilter`` pads with zeros, which darkens a map at the image border, where this one
reflects.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def gaussian_smooth(maps: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian smoothing of (N, H, W) maps with standard deviation ``sigma``
    pixels (reflect padding, kernel radius 3 sigma); ``sigma <= 0`` returns the maps."""
    if sigma <= 0:
        return maps
    radius = max(1, int(3 * sigma))
    offsets = torch.arange(-radius, radius + 1, dtype=maps.dtype)
    kernel = torch.exp(-(offsets**2) / (2 * sigma**2))
    kernel = (kernel / kernel.sum()).to(maps.device)
    x = maps[:, None]
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="reflect"), kernel.view(1, 1, 1, -1))
    x = F.conv2d(F.pad(x, (0, 0, radius, radius), mode="reflect"), kernel.view(1, 1, -1, 1))
    return x[:, 0]
