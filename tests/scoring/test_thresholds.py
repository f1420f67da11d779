import numpy as np
import pytest
from skimage.filters import threshold_otsu

from anodiff.errors import AnodiffError
from anodiff.scoring.postprocess import PostProcess
from anodiff.scoring.thresholds import healthy_fpr_threshold, otsu_threshold, per_image_otsu

RNG = np.random.default_rng(1)


def test_per_image_otsu_uses_each_maps_foreground() -> None:
    maps = RNG.random((3, 16, 16))
    maps[:, 4:8, 4:8] += 2
    fg = np.zeros((3, 16, 16), bool)
    fg[:, 2:14, 2:14] = True
    masks = per_image_otsu(maps, fg)
    for i in range(3):
        expected = (maps[i] > threshold_otsu(maps[i][fg[i]])) & fg[i]
        assert np.array_equal(masks[i], expected)
    assert masks[:, 4:8, 4:8].all() and not masks[:, :2].any()


def test_flat_map_flags_nothing() -> None:
    assert otsu_threshold(np.full((8, 8), 0.2)) == float("inf")
    assert not per_image_otsu(np.zeros((2, 8, 8))).any()


def test_healthy_fpr_threshold_flags_the_target_fraction() -> None:
    healthy = RNG.normal(size=(50, 32, 32))
    t = healthy_fpr_threshold(healthy, fpr=0.01)
    assert (healthy >= t).mean() == pytest.approx(0.01, abs=0.001)
    fresh = RNG.normal(size=(50, 32, 32))  # held-out healthy data: still about 1 %
    assert (fresh >= t).mean() == pytest.approx(0.01, abs=0.003)
    with pytest.raises(AnodiffError, match="false-positive rate"):
        healthy_fpr_threshold(healthy, fpr=1.5)


def test_postprocess_filters_maps_and_cleans_masks() -> None:
    maps = np.zeros((1, 16, 16), np.float32)
    maps[0, 3, 3] = 1.0  # an isolated hot pixel
    maps[0, 8:13, 8:13] = 1.0  # a solid region
    fg = np.ones_like(maps, bool)
    fg[0, :, 14:] = False
    maps[0, 5, 15] = 5.0  # background
    out = PostProcess(median_size=3).maps(maps, fg)
    assert out[0, 3, 3] == 0 and out[0, 10, 10] == 1.0 and out[0, 5, 15] == 0
    masks = np.zeros((1, 16, 16), bool)
    masks[0, 1, 1] = True
    masks[0, 8:13, 8:13] = True
    cleaned = PostProcess(min_component_size=4).masks(masks)
    assert not cleaned[0, 1, 1] and cleaned[0, 8:13, 8:13].all()
    opened = PostProcess(opening_radius=1).masks(masks)
    assert not opened[0, 1, 1] and opened[0, 10, 10]
    with pytest.raises(AnodiffError, match="median_size"):
        PostProcess(median_size=2)
