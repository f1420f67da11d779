"""Tests for anodiff.data.normalise: intensity normalisation, foreground, fit/unfit."""

import numpy as np
import pytest

from anodiff.data.normalise import (
    fit_to_size,
    foreground_mask,
    normalisation_settings,
    normalise_intensity,
    unfit,
)
from anodiff.errors import AnodiffError


def test_foreground_is_above_the_minimum_with_optional_cleanup() -> None:
    volume = np.zeros((9, 9))
    volume[2:7, 2:7] = 5.0
    volume[4, 4] = 0.0  # a hole
    volume[0, 8] = 1.0  # a speck
    assert foreground_mask(volume).sum() == 25 - 1 + 1
    cleaned = foreground_mask(volume, fill_holes=True, largest_component=True)
    expected = np.zeros((9, 9), dtype=bool)
    expected[2:7, 2:7] = True
    np.testing.assert_array_equal(cleaned, expected)


def test_percentile_clips_to_foreground_percentiles() -> None:
    volume = np.concatenate([np.zeros(50), np.arange(1.0, 101.0)])  # 50 background voxels
    out = normalise_intensity(volume, "percentile", low=10.0, high=90.0)
    lo, hi = np.percentile(np.arange(1.0, 101.0), [10.0, 90.0])
    np.testing.assert_allclose(out[50:], np.clip((np.arange(1.0, 101.0) - lo) / (hi - lo), 0, 1),
                               rtol=1e-6, atol=1e-7)  # float32 (NumPy 1.x promotes differently)
    assert out.dtype == np.float32 and np.all(out[:50] == 0.0)


def test_max_divides_by_the_maximum() -> None:
    volume = np.array([0.0, 2.0, 4.0, 8.0])
    np.testing.assert_allclose(normalise_intensity(volume, "max"), volume / 8.0)


def test_brain_zscore_maps_mean_to_half_and_background_to_zero() -> None:
    rng = np.random.default_rng(0)
    volume = np.zeros((20, 20))
    volume[5:15, 5:15] = rng.normal(100.0, 10.0, (10, 10))
    volume[5, 5] = 1000.0  # an outlier, clipped at 3 sd
    out = normalise_intensity(volume, "brain")
    fg = volume > 0
    z = (volume - volume[fg].mean()) / volume[fg].std()
    np.testing.assert_allclose(out[fg], (np.clip(z[fg], -3, 3) + 3) / 6, rtol=1e-5)
    assert out[5, 5] == 1.0 and np.all(out[~fg] == 0.0)


def test_explicit_foreground_and_constant_volume() -> None:
    volume = np.array([1.0, 2.0, 3.0, 100.0])
    fg = np.array([True, True, True, False])
    np.testing.assert_allclose(
        normalise_intensity(volume, "max", foreground=fg), [1 / 3, 2 / 3, 1, 1]
    )
    np.testing.assert_array_equal(normalise_intensity(np.full((3, 3), 7.0)), np.zeros((3, 3)))


def test_bad_method_and_parameters_are_named() -> None:
    with pytest.raises(AnodiffError, match="unknown normalisation 'zscore'"):
        normalise_intensity(np.ones(3), "zscore")
    with pytest.raises(AnodiffError, match=r"'percentile' has no parameter \['clip'\]"):
        normalisation_settings("percentile", clip=2.0)
    assert normalisation_settings("brain", clip=2.0) == {"clip": 2.0}


def test_pad_centres_with_background_and_unfit_is_exact() -> None:
    rng = np.random.default_rng(1)
    batch = rng.uniform(1.0, 2.0, (2, 3, 5, 7)).astype(np.float32)
    fitted = fit_to_size(batch, 8, "pad")
    assert fitted.shape == (2, 3, 8, 8)
    np.testing.assert_array_equal(fitted[..., 1:6, 0:7], batch)  # (8-5)//2 = 1, (8-7)//2 = 0
    np.testing.assert_array_equal(fitted[..., 0, 0], batch.min(axis=(-2, -1)))
    np.testing.assert_array_equal(unfit(fitted, (5, 7), "pad"), batch)


def test_pad_crops_larger_slices_and_unfit_fills_the_border() -> None:
    image = np.arange(10 * 6, dtype=np.float32).reshape(10, 6)
    fitted = fit_to_size(image, (6, 6), "pad")
    np.testing.assert_array_equal(fitted, image[2:8])
    back = unfit(fitted, (10, 6), "pad", fill=-1.0)
    np.testing.assert_array_equal(back[2:8], image[2:8])
    assert np.all(back[:2] == -1.0) and np.all(back[8:] == -1.0)


def test_resize_keeps_aspect_ratio_and_masks_stay_binary() -> None:
    yy, xx = np.mgrid[0:48, 0:96]
    image = (np.sin(yy / 8.0) + np.cos(xx / 11.0)).astype(np.float32)
    mask = (yy - 24) ** 2 + (xx - 48) ** 2 < 15**2
    fitted = fit_to_size(image, 64, "resize")
    fitted_mask = fit_to_size(mask, 64, "resize")
    assert fitted.shape == (64, 64) and fitted_mask.dtype == np.bool_
    assert np.all(fitted[:16] == fitted.min()) and np.all(~fitted_mask[:16])  # 48*2/3 = 32 rows
    back = unfit(fitted, (48, 96), "resize")
    assert back.shape == (48, 96) and np.abs(back - image)[4:-4, 4:-4].max() < 0.15
    back_mask = unfit(fitted_mask, (48, 96), "resize")
    assert back_mask.dtype == np.bool_ and (back_mask ^ mask).sum() < 0.05 * mask.sum()


def test_unknown_fit_mode() -> None:
    with pytest.raises(AnodiffError, match="unknown fit mode 'crop'"):
        fit_to_size(np.zeros((4, 4)), 8, "crop")
