"""Restoration pairs made on demand (Baugh 2024): the mask contract per pair, the identity
rate, seeding independent of access order, and the bundled other-source textures."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from anodiff.data.anomalies import IDENTITY, TASKS
from anodiff.data.anomalies.pairs import CorruptedPairs
from anodiff.data.anomalies.textures import texture_sources
from anodiff.errors import AnodiffError

SIZE = 32


def _brains(n: int, seed: int = 0) -> np.ndarray:
    """Two-channel textured discs on a zero background, (n, 2, SIZE, SIZE) in [0, 1]."""
    rng = np.random.default_rng(seed)
    rows, cols = np.indices((SIZE, SIZE))
    disc = np.hypot(rows - SIZE / 2, cols - SIZE / 2) < SIZE * 0.42
    out = np.zeros((n, 2, SIZE, SIZE), np.float32)
    for i in range(n):
        texture = ndimage.gaussian_filter(rng.normal(size=(SIZE, SIZE)), 1.5)
        texture = (texture - texture.min()) / np.ptp(texture)
        out[i, 0] = disc * (0.2 + 0.7 * texture)
        out[i, 1] = disc * (0.9 - 0.7 * texture)
    return out


@pytest.fixture(scope="module")
def pairs() -> CorruptedPairs:
    return CorruptedPairs(_brains(8), TASKS, length=300, seed=(0, 2),
                          other_source=texture_sources(SIZE))


def test_every_pair_changes_only_inside_a_non_empty_mask(pairs: CorruptedPairs) -> None:
    seen = set()
    for index in range(60):
        target, corrupted, mask, task = pairs.corrupt(index)
        seen.add(task)
        assert np.array_equal(target, pairs.images[index % len(pairs.images)])
        assert np.array_equal(corrupted[:, ~mask], target[:, ~mask])
        if task == IDENTITY:
            assert not mask.any() and np.array_equal(corrupted, target)
        else:
            assert mask.any() and corrupted.min() >= 0 and corrupted.max() <= 1
    assert seen == {IDENTITY, *range(len(TASKS))}


def test_identity_rate_holds_over_the_pairs(pairs: CorruptedPairs) -> None:
    identity = sum(pairs.corrupt(i)[3] == IDENTITY for i in range(len(pairs)))
    n, p = len(pairs), 0.2
    assert abs(identity - n * p) < 4 * np.sqrt(n * p * (1 - p))  # 4 sigma of the binomial


def test_pairs_are_seeded_and_independent_of_access_order(pairs: CorruptedPairs) -> None:
    later_first = pairs[7]
    for index in range(7):
        pairs[index]
    assert all(torch.equal(later_first[k], pairs[7][k]) for k in ("image", "cond"))
    other = CorruptedPairs(pairs.images, TASKS, length=300, seed=(1, 2),
                           other_source=texture_sources(SIZE))
    assert any(not torch.equal(other[i]["cond"], pairs[i]["cond"]) for i in range(10))


def test_signed_pairs_are_in_the_model_range() -> None:
    images = _brains(4)
    plain = CorruptedPairs(images, ("intensity_change",), length=4, seed=0)
    signed = CorruptedPairs(images, ("intensity_change",), length=4, seed=0, signed=True)
    for i in range(4):
        assert torch.allclose(signed[i]["cond"], plain[i]["cond"] * 2 - 1)
    targets, conds = signed.stacked()
    assert targets.shape == conds.shape == (4, 2, SIZE, SIZE) and targets.min() >= -1


def test_constant_slices_are_left_out_and_bad_arguments_named() -> None:
    images = _brains(4)
    images[1] = 0.0
    assert CorruptedPairs(images, ("sink_deformation",), length=5).kept.tolist() == [0, 2, 3]
    with pytest.raises(AnodiffError, match="other_source"):
        CorruptedPairs(images, ("other_source_blend",), length=5)
    with pytest.raises(AnodiffError, match="length"):
        CorruptedPairs(images, ("sink_deformation",), length=0)
    with pytest.raises(AnodiffError, match="at least 2"):
        CorruptedPairs(images[:1], ("same_source_blend",), length=5)
    with pytest.raises(IndexError):
        CorruptedPairs(images, ("sink_deformation",), length=5).corrupt(5)


def test_bundled_textures_match_baughs_scale() -> None:
    textures = texture_sources(64)
    assert textures.shape == (3, 1, 256, 256) and textures.dtype == np.float32
    assert 0 <= textures.min() and textures.max() <= 1 and textures.std() > 0.05
    assert texture_sources(8).shape[-1] == 32
