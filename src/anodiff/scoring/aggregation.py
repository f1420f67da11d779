"""Combine several draws of one method on the same images into one anomaly map.

A stochastic reconstruction (AnoDDPM's noising, imgcond's restoration from noise) gives
another pseudo-healthy image with every seed, and a translation at another noise level
another trade-off between keeping healthy detail and removing the lesion (the "noise
paradox" of review Sec. 5.4). Behrendt et al. aggregate reconstructions over noise levels
for their strongest brain-MRI figures (Behrendt 2025, cDDPM; Behrendt 2024b, ensembled
structure-based scoring). Two rules, chosen by ``LocalizationConfig.aggregate``:

* ``mean`` — the mean of the draws' maps (and of their reconstructions);
* ``zscore`` — the pixel-wise Mahalanobis distance of the input to the distribution of the
  reconstructions, with a diagonal covariance per pixel: where the reconstructions agree
  (healthy tissue the model is sure of) a small residual already counts, where they
  disagree (edges, the model's uncertain regions) a larger one is needed.

Written by hand: no library computes per-pixel z-scores over a reconstruction ensemble.
"""

from __future__ import annotations

import torch
from torch import Tensor

AGGREGATES = ("mean", "zscore")
VARIANCE_FLOOR = 1e-6
"""Added to every variance, so that identical reconstructions give a finite distance."""


def zscore_map(images: Tensor, reconstructions: Tensor, fg: Tensor) -> Tensor:
    """Mean over channels of ``(x - mean)^2 / (var + floor)``: (N, H, W).

    ``reconstructions`` (K, N, C, H, W), K >= 2; ``fg`` (N, H, W) bool. The floor is the
    median variance over each image's foreground (per channel) plus :data:`VARIANCE_FLOOR`,
    so that pixels where the draws happen to agree exactly do not dominate the map.
    """
    mean = reconstructions.mean(0)
    variance = reconstructions.var(0, correction=1)
    n, c = variance.shape[:2]
    floor = torch.zeros(n, c, 1, 1, dtype=variance.dtype, device=variance.device)
    for i in range(n):
        inside = variance[i][:, fg[i]] if fg[i].any() else variance[i].reshape(c, -1)
        floor[i, :, 0, 0] = inside.quantile(0.5, dim=1)
    return ((images - mean) ** 2 / (variance + floor + VARIANCE_FLOOR)).mean(1)


def aggregate_maps(images: Tensor, maps: Tensor, reconstructions: Tensor | None, rule: str,
                   fg: Tensor) -> Tensor:
    """The ``rule``'s map (N, H, W) from K draws: ``maps`` (K, N, H, W) and, for ``zscore``,
    their ``reconstructions`` (K, N, C, H, W) of ``images`` (N, C, H, W)."""
    if rule not in AGGREGATES:
        raise ValueError(f"aggregate must be one of {AGGREGATES}, got {rule!r}")
    if rule == "mean":
        return maps.mean(0)
    if reconstructions is None:
        raise ValueError("zscore aggregation needs the draws' reconstructions")
    return zscore_map(images, reconstructions, fg)
