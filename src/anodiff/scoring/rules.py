"""The shared tail of every method: a raw map becomes a map, a mask and an image score.

:meth:`anodiff.methods.base.Detector.localize` calls these once for every method, in this
order, so that no method writes its own tail:

1. :func:`postprocess_map` — optional Gaussian smoothing, then zero outside the foreground
   (pixel metrics are pooled inside it; the background of skull-stripped MRI carries no
   information);
2. a **mask rule** (``MASK_RULES``): ``otsu`` — each map's own Otsu threshold inside the
   foreground (Wolleb 2022's Dice protocol); ``healthy_fpr`` — one threshold calibrated on
   healthy validation maps so that a fraction ``fpr`` of their foreground pixels reach it
   (Bercea et al.'s deployable operating point); ``own`` — the method's own rule (InvDetect's
   graph cut);
3. a **score rule** (``SCORE_RULES``): ``percentile`` — a high percentile of the map inside
   the foreground (robust to single noisy pixels); ``mean`` — the mean of the map over the
   whole image (Baugh 2024); ``top_k`` — the mean of the ``k`` highest foreground values.

A **case score** (:func:`~anodiff.scoring.thresholds.case_shares`) sits beside them for
every method, whatever its mask rule: the share of a case's foreground reaching one
threshold calibrated like ``healthy_fpr``'s. A healthy case scores about ``fpr``; a case
with a lesion the method sees scores more. It answers "is this case unlike the healthy
ones?", which a per-image Otsu mask (it flags part of every image) and an image score's
maximum over slices (1.0 for every case of a threshold on [0, 1] intensities) cannot.
"""

from __future__ import annotations

import torch
from torch import Tensor

from anodiff.errors import AnodiffError
from anodiff.scoring.smoothing import gaussian_smooth
from anodiff.scoring.thresholds import healthy_fpr_threshold, per_image_otsu

MASK_RULES: tuple[str, ...] = ("otsu", "healthy_fpr", "own")
SCORE_RULES: tuple[str, ...] = ("percentile", "mean", "top_k")


def postprocess_map(maps: Tensor, fg: Tensor, smoothing_sigma: float) -> Tensor:
    """Maps (N, H, W) smoothed with ``smoothing_sigma`` pixels (0: not at all), then zeroed
    outside the foreground ``fg`` (N, H, W)."""
    smoothed = gaussian_smooth(maps, smoothing_sigma)
    return torch.where(fg, smoothed, torch.zeros((), dtype=smoothed.dtype, device=maps.device))


def otsu_masks(maps: Tensor, fg: Tensor) -> Tensor:
    """Each map's own Otsu threshold inside the foreground (N, H, W) bool (CPU tensors)."""
    return torch.from_numpy(per_image_otsu(maps.float().numpy(), fg.numpy()))


def calibrate_threshold(healthy_maps: Tensor, fg: Tensor, fpr: float) -> float:
    """The map value that a fraction ``fpr`` of the healthy maps' foreground pixels reach."""
    return healthy_fpr_threshold(healthy_maps.float().numpy(), fpr, fg.numpy())


def image_scores(maps: Tensor, fg: Tensor, rule: str, *, percentile: float = 99.0,
                 top_k: int = 50) -> Tensor:
    """Image scores (N,) of post-processed maps (N, H, W) by score rule ``rule``.

    ``percentile`` and ``top_k`` look inside the foreground only; an image without
    foreground scores 0 under them.
    """
    if rule == "mean":
        return maps.flatten(1).float().mean(1)
    if rule not in SCORE_RULES:
        raise AnodiffError(f"unknown score rule {rule!r}; choose one of {list(SCORE_RULES)}")
    scores = torch.zeros(maps.shape[0])
    for i in range(maps.shape[0]):
        values = maps[i][fg[i]].float()
        if not values.numel():
            continue
        if rule == "percentile":
            scores[i] = torch.quantile(values, percentile / 100)
        else:
            scores[i] = values.topk(min(top_k, values.numel())).values.mean()
    return scores
