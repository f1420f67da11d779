"""Anomaly maps from an image and its restoration: structural (SSIM) and absolute residuals.

Reconstruction methods compare the input ``x`` with a pseudo-healthy restoration ``x_hat``.
The absolute residual ``sum_c |x - x_hat|`` is the classic map (Wolleb 2022); the SSIM map
``1 - SSIM(x_hat, x)`` is what Baugh 2024 use, following the UPD benchmark
(Lagogiannis et al.): SSIM compares local means, contrasts and structure in a window, so it
reacts to changed texture and edges even where intensities barely move (low-contrast
lesions). SSIM comes from scikit-image (uniform 11-pixel window, data range 1, the UPD
settings), computed per channel and averaged over channels.
"""

from __future__ import annotations

import numpy as np
import torch
from skimage.metrics import structural_similarity
from torch import Tensor

from anodiff.errors import AnodiffError


def _check_pair(images: Tensor, restored: Tensor) -> None:
    if images.dim() != 4 or images.shape != restored.shape:
        raise AnodiffError(f"images and restorations must both be (N, C, H, W), got "
                           f"{tuple(images.shape)} and {tuple(restored.shape)}")


def absolute_residual(images: Tensor, restored: Tensor) -> Tensor:
    """``sum_c |x - x_hat|`` (N, H, W)."""
    _check_pair(images, restored)
    return (images - restored).abs().sum(1)


def squared_residual(images: Tensor, restored: Tensor) -> Tensor:
    """``sum_c (x - x_hat)^2`` (N, H, W), AnoDDPM's map (Wyatt 2022)."""
    _check_pair(images, restored)
    return (images - restored).square().sum(1)


def ssim_anomaly_map(images: Tensor, restored: Tensor, window: int = 11) -> Tensor:
    """``1 - SSIM(x_hat, x)`` (N, H, W), the local SSIM averaged over channels.

    Images are in [0, 1] (``data_range = 1``). ``window`` is the side of the uniform window
    (odd, at most the image side).
    """
    _check_pair(images, restored)
    if window < 3 or window % 2 == 0 or window > min(images.shape[-2:]):
        raise AnodiffError(f"SSIM window must be odd, >= 3 and at most the image side "
                           f"{min(images.shape[-2:])}, got {window}")
    x = images.detach().cpu().double().numpy()
    y = restored.detach().cpu().double().numpy()
    out = np.zeros((x.shape[0], *x.shape[2:]))
    for i in range(x.shape[0]):
        for c in range(x.shape[1]):
            _, local = structural_similarity(y[i, c], x[i, c], win_size=window,
                                             data_range=1.0, full=True)
            out[i] += local
    return torch.from_numpy(1.0 - out / x.shape[1]).float()


def structural_change(images: Tensor, restored: Tensor, window: int = 11) -> Tensor:
    """``1 - SSIM(x_hat, x)`` (N, H, W), clipped at 0, with ``window`` clipped to the largest
    odd side the image allows (the factor THOR and AutoDDPM weigh residuals with here)."""
    side = min(images.shape[-2:])
    window = min(window, side - (side + 1) % 2)
    return ssim_anomaly_map(images, restored, window).to(images.device).clamp_min(0)


def structural_residual(images: Tensor, restored: Tensor, window: int | None = 11) -> Tensor:
    """``(1 - SSIM(x_hat, x)) * sum_c |x - x_hat|`` (N, H, W): the residual weighted by how
    much the local structure changed; ``window=None`` gives the residual alone.

    THOR and AutoDDPM (Bercea 2023a, 2024) weigh the residual by LPIPS, a distance in the
    features of an ImageNet-trained network whose weights cannot be downloaded here; ``1 -
    SSIM`` (:func:`structural_change`) is the structural factor that needs none.
    """
    residual = absolute_residual(images, restored)
    if window is None:
        return residual
    return structural_change(images, restored, window) * residual
