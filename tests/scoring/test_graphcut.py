import itertools

import numpy as np
import pytest
import torch

from anodiff.errors import AnodiffError
from anodiff.scoring.graphcut import (
    NeighbourDistances,
    calibrate_lambda,
    detected_area,
    graph_cut_mask,
    refine_masks,
    tau_from_normal,
)


def energy(y: np.ndarray, score: np.ndarray, right: np.ndarray, down: np.ndarray,
           lam: float) -> float:
    """Eq. 2-4 written out: cross-entropy of sigmoid(A) plus lambda alpha [y_p != y_q]."""
    p = 1 / (1 + np.exp(-score))
    unary = -(y * np.log(p) + (1 - y) * np.log(1 - p)).sum()
    pairwise = (right * (y[:, 1:] != y[:, :-1])).sum() + (down * (y[1:, :] != y[:-1, :])).sum()
    return float(unary + lam * pairwise)


@pytest.mark.parametrize("seed,lam", [(0, 0.0), (1, 0.5), (2, 2.0), (3, 8.0), (4, 1.0)])
def test_graph_cut_finds_the_exact_minimum_of_all_512_labellings_of_3x3(seed, lam) -> None:
    rng = np.random.default_rng(seed)
    score = rng.normal(0, 2, (3, 3))
    right, down = rng.uniform(0, 1, (3, 2)), rng.uniform(0, 1, (2, 3))
    best = min(energy(np.array(bits).reshape(3, 3), score, right, down, lam)
               for bits in itertools.product([0, 1], repeat=9))
    mask = graph_cut_mask(score, right, down, lam)
    assert energy(mask.astype(int), score, right, down, lam) == pytest.approx(best, abs=1e-9)


def test_graph_cut_with_a_region_minimises_over_the_region_and_keeps_the_rest_normal() -> None:
    rng = np.random.default_rng(7)
    score = rng.normal(0, 2, (3, 4))
    right, down = rng.uniform(0, 1, (3, 3)), rng.uniform(0, 1, (2, 4))
    region = np.ones((3, 4), bool)
    region[:, 0] = False  # the first column is background
    inside = (slice(None), slice(1, None))
    best = min(energy(np.array(bits).reshape(3, 3), score[inside], right[:, 1:], down[:, 1:], 3.0)
               for bits in itertools.product([0, 1], repeat=9))
    mask = graph_cut_mask(np.where(region, score, 9.0), right, down, 3.0, region)
    assert not mask[:, 0].any()
    got = energy(mask[inside].astype(int), score[inside], right[:, 1:], down[:, 1:], 3.0)
    assert got == pytest.approx(best, abs=1e-9)


def test_refinement_removes_isolated_false_positives_and_keeps_a_solid_region() -> None:
    rng = np.random.default_rng(0)
    score = np.full((1, 32, 32), -1.5)
    score[0, 10:20, 12:22] = 2.0  # a solid lesion
    specks = rng.choice(32 * 32, 25, replace=False)
    flat = score.reshape(-1)
    flat[specks] = np.where(flat[specks] > 0, flat[specks], 1.5)  # isolated false positives
    region = np.ones_like(score, bool)
    distances = NeighbourDistances(np.zeros((1, 32, 31)), np.zeros((1, 31, 32)))  # alpha = 1
    plain = score > 0
    refined = refine_masks(score, distances, tau=1.0, lam=2.0, region=region)
    lesion = np.zeros_like(plain)
    lesion[0, 10:20, 12:22] = True
    assert (plain & ~lesion).sum() >= 20
    assert not (refined & ~lesion).any(), "every isolated speck is gone"
    assert refined[lesion].all(), "the solid region stays whole"


def test_neighbour_distances_tau_and_detected_area() -> None:
    features = torch.zeros(1, 2, 3, 3)
    features[0, 0, :, 2] = 2.0  # a step between columns 1 and 2
    d = NeighbourDistances.of(features)
    assert d.right.shape == (1, 3, 2) and d.down.shape == (1, 2, 3)
    assert np.array_equal(d.right[0], [[0, 4], [0, 4], [0, 4]]) and not d.down.any()
    region = np.ones((1, 3, 3), bool)
    assert tau_from_normal(d, region) == pytest.approx(np.sqrt(12 / 12))  # 3 fours, 9 zeros
    masks = np.zeros((1, 3, 3), bool)
    masks[0, 0, 0] = True
    assert detected_area(masks, region) == pytest.approx(1 / 9)
    with pytest.raises(AnodiffError, match="tau"):
        tau_from_normal(d, np.zeros_like(region))


def test_lambda_rule_takes_the_smallest_value_within_the_budget() -> None:
    rng = np.random.default_rng(1)
    score = rng.normal(-1.5, 1.0, (4, 24, 24))  # healthy maps with ~7 % isolated positives
    region = np.ones_like(score, bool)
    distances = NeighbourDistances(np.zeros((4, 24, 23)), np.zeros((4, 23, 24)))
    choice = calibrate_lambda(score, distances, 1.0, region, max_area=0.01)
    assert choice.within_budget and choice.area <= 0.01 and choice.lam > 0
    assert all(area > 0.01 for lam, area in choice.areas.items() if lam < choice.lam)
    loose = calibrate_lambda(score, distances, 1.0, region, max_area=0.5)
    assert loose.lam == 0.0 and loose.area == pytest.approx(float((score > 0).mean()))


def test_an_unreachable_budget_takes_the_smallest_lambda_near_the_least_area() -> None:
    score = np.full((2, 12, 12), -2.0)
    score[:, 2:8, 2:8] = 2.0  # a solid positive block on every 'normal' image
    score[:, 10, 10] = 1.0  # and one isolated positive pixel, which refinement removes
    region = np.ones_like(score, bool)
    right, down = np.zeros((2, 12, 11)), np.zeros((2, 11, 12))
    right[:, 2:8, [1, 7]] = down[:, [1, 7], 2:8] = 1e6  # features jump across the block's edge
    distances = NeighbourDistances(right, down)
    choice = calibrate_lambda(score, distances, 1.0, region, max_area=0.01)
    assert not choice.within_budget
    least = min(choice.areas.values())
    assert choice.area <= 1.1 * least
    assert choice.lam == min(k for k, v in choice.areas.items() if v <= 1.1 * least)
    assert least == pytest.approx(36 / 144), "the block, cut free by alpha = 0, stays"
    assert choice.lam == 0.0, "the speck's 0.7 % is within 10 % of the least area"
    strict = calibrate_lambda(score, distances, 1.0, region, max_area=0.01, tolerance=0.0)
    assert strict.lam > 0 and strict.area == pytest.approx(least), "the speck goes first"


def test_negative_lambda_or_tau_is_refused() -> None:
    with pytest.raises(AnodiffError, match="lambda"):
        graph_cut_mask(np.zeros((2, 2)), np.zeros((2, 1)), np.zeros((1, 2)), -1.0)
    distances = NeighbourDistances(np.zeros((1, 2, 1)), np.zeros((1, 1, 2)))
    with pytest.raises(AnodiffError, match="tau"):
        refine_masks(np.zeros((1, 2, 2)), distances, 0.0, 1.0, np.ones((1, 2, 2), bool))
