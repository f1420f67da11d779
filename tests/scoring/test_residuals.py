"""Maps from an image and its restoration agree with scikit-image's SSIM and with |x - x_hat|."""

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from anodiff.errors import AnodiffError
from anodiff.scoring.residuals import absolute_residual, ssim_anomaly_map


def test_ssim_map_is_one_minus_skimage_ssim_averaged_over_channels() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 20, 20, generator=gen)
    y = (x + 0.1 * torch.randn(x.shape, generator=gen)).clamp(0, 1)
    out = ssim_anomaly_map(x, y, window=7)
    for i in range(2):
        expected = np.mean([structural_similarity(
            y[i, c].double().numpy(), x[i, c].double().numpy(), win_size=7, data_range=1.0,
            full=True)[1] for c in range(3)], axis=0)
        assert np.allclose(out[i].numpy(), 1 - expected, atol=1e-6)
    assert float(ssim_anomaly_map(x, x).abs().max()) < 1e-6


def test_absolute_residual_sums_channels() -> None:
    x, y = torch.zeros(1, 2, 4, 4), torch.full((1, 2, 4, 4), 0.25)
    assert torch.allclose(absolute_residual(x, y), torch.full((1, 4, 4), 0.5))


@pytest.mark.parametrize("window", [2, 4, 31])
def test_bad_windows_and_shapes_are_named(window: int) -> None:
    x = torch.rand(1, 1, 16, 16)
    with pytest.raises(AnodiffError, match="window"):
        ssim_anomaly_map(x, x, window=window)
    with pytest.raises(AnodiffError, match="restorations"):
        absolute_residual(x, x[:, :, :8])
