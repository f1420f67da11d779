import math

import pytest
import torch

from anodiff.errors import AnodiffError
from anodiff.scoring.patches import PatchGrid


def test_grid_has_stride_half_the_patch_and_snaps_the_last_window_to_the_border() -> None:
    grid = PatchGrid.create((64, 64), 16)
    assert len(grid) == 49
    assert sorted({r for r, _ in grid.corners}) == [0, 8, 16, 24, 32, 40, 48]
    odd = PatchGrid.create((60, 50), 16)
    assert sorted({r for r, _ in odd.corners}) == [0, 8, 16, 24, 32, 40, 44]
    assert sorted({c for _, c in odd.corners}) == [0, 8, 16, 24, 32, 34]


@pytest.mark.parametrize("spatial,size", [((64, 64), 16), ((60, 50), 16), ((37, 41), 8),
                                          ((16, 16), 16)])
def test_a_constant_patch_score_aggregates_to_that_constant_everywhere(spatial, size) -> None:
    grid = PatchGrid.create(spatial, size)
    values = torch.full((2, len(grid), 1), -2.5)
    pixels, coverage = grid.aggregate(values)
    assert pixels.shape == (2, 1, *spatial)
    assert torch.allclose(pixels, torch.tensor(-2.5)), "borders and corners included"
    assert (coverage > 0).all()


def test_aggregation_is_eq1_weighted_average_of_the_patches_containing_the_pixel() -> None:
    torch.manual_seed(0)
    grid = PatchGrid.create((24, 20), 8)
    values = torch.randn(1, len(grid), 1)
    pixels, _ = grid.aggregate(values)
    omega = 8 / 4
    for p in [(0, 0), (5, 7), (23, 19), (12, 3)]:
        num = den = 0.0
        for j, (r, c) in enumerate(grid.corners):
            if r <= p[0] < r + 8 and c <= p[1] < c + 8:
                centre = (r + 3.5, c + 3.5)
                w = math.exp(-((p[0] - centre[0]) ** 2 + (p[1] - centre[1]) ** 2) / omega**2)
                num, den = num + w * float(values[0, j, 0]), den + w
        assert float(pixels[0, 0, p[0], p[1]]) == pytest.approx(num / den, rel=1e-5)


def test_left_out_patches_do_not_count_and_uncovered_pixels_are_zero() -> None:
    grid = PatchGrid.create((16, 16), 8)  # 3 x 3 windows
    values = torch.arange(9, dtype=torch.float32).reshape(1, 9, 1)
    valid = torch.zeros(1, 9, dtype=torch.bool)
    valid[0, 0] = True  # only the top-left window
    pixels, coverage = grid.aggregate(values, valid)
    assert torch.all(pixels[0, 0, :8, :8] == 0) and torch.all(coverage[0, :8, :8] > 0)
    assert torch.all(coverage[0, 8:, :] == 0) and torch.all(pixels[0, 0, 8:, :] == 0)
    valid[0, 8] = True  # bottom-right: pixels covered by both are a mix of 0 and 8
    pixels, _ = grid.aggregate(values, valid)
    assert float(pixels[0, 0, 15, 15]) == pytest.approx(8.0)


def test_extract_returns_the_windows_in_corner_order() -> None:
    grid = PatchGrid.create((16, 12), 8)
    images = torch.arange(2 * 3 * 16 * 12, dtype=torch.float32).reshape(2, 3, 16, 12)
    patches = grid.extract(images)
    assert patches.shape == (2, len(grid), 3, 8, 8)
    r, c = grid.corners[-1]
    assert torch.equal(patches[1, -1], images[1, :, r:r + 8, c:c + 8])


def test_patch_size_must_fit_the_image() -> None:
    with pytest.raises(AnodiffError, match="patch size"):
        PatchGrid.create((8, 8), 16)
