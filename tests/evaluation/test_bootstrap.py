"""Case bootstrap: the weighted AP equals scikit-learn's, intervals and paired tests behave."""

import math

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from anodiff.evaluation.bootstrap import (
    CaseFigures,
    WeightedAP,
    WeightedAUROC,
    case_weights,
    intervals,
    paired_comparison,
)


def test_case_weights_draw_every_case_count_with_replacement() -> None:
    weights = case_weights(7, 500, seed=0)
    assert weights.shape == (500, 7) and (weights.sum(1) == 7).all()
    assert abs(weights.mean() - 1) < 0.05  # each case drawn once per resample on average
    assert np.array_equal(weights, case_weights(7, 500, seed=0))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_weighted_ap_matches_scikit_learn_with_sample_weights(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n, cases = 3000, 12
    labels = rng.random(n) < 0.1
    scores = np.round(rng.random(n) + labels * 0.5, 2)  # rounded: many ties
    case = rng.integers(0, cases, n)
    case_weight = rng.integers(0, 3, cases).astype(float)
    ours = WeightedAP(labels, scores, case)(case_weight)
    reference = average_precision_score(labels, scores, sample_weight=case_weight[case])
    assert ours == pytest.approx(reference, abs=1e-12)
    assert WeightedAP(labels, scores, case)(np.ones(cases)) == pytest.approx(
        average_precision_score(labels, scores), abs=1e-12)


def _figures(separation: float, seed: int, cases: int = 20) -> CaseFigures:
    """Toy slices of ``cases`` cases, 4 slices each, lesions scoring ``separation`` higher."""
    rng = np.random.default_rng(seed)
    n = cases * 4
    truth = np.zeros((n, 8, 8), bool)
    truth[::2, 2:5, 2:5] = True
    maps = rng.random((n, 8, 8)) + separation * truth
    ids = np.repeat([f"c{i}" for i in range(cases)], 4)
    labels = truth.reshape(n, -1).any(1)
    scores = maps.reshape(n, -1).max(1)
    dice = {f"c{i}": float(np.clip(0.5 + separation / 4 + rng.normal(0, 0.05), 0, 1))
            for i in range(cases)}
    case = np.repeat(np.arange(cases), 4)
    pixels = np.broadcast_to(case[:, None, None], truth.shape)[labels].ravel()
    return CaseFigures(tuple(dict.fromkeys(ids.tolist())),  # the anomalous slices' pixels
                       WeightedAP(truth[labels].ravel(), maps[labels].ravel(), pixels),
                       WeightedAUROC(labels, scores, case),
                       np.array([dice[c] for c in dict.fromkeys(ids.tolist())]))


def test_intervals_bracket_the_estimate() -> None:
    figures = _figures(0.5, seed=0)
    bounds = intervals(figures, resamples=300, seed=1)
    ones = np.ones(len(figures.cases))
    for name in ("pixel_ap", "image_auroc", "volume_dice_fpr"):
        value = figures.figure(name)(ones)
        assert bounds[f"{name}_ci_low"] <= value <= bounds[f"{name}_ci_high"], name
        assert bounds[f"{name}_ci_high"] - bounds[f"{name}_ci_low"] < 0.5


def test_paired_comparison_tells_a_better_method_from_an_equal_one() -> None:
    strong, weak = _figures(1.0, seed=0), _figures(0.2, seed=0)
    better = paired_comparison(strong, weak, resamples=300)
    assert better["pixel_ap_difference"] > 0 and better["pixel_ap_p"] < 0.05
    assert better["volume_dice_fpr_p"] < 0.05
    same = paired_comparison(weak, weak, resamples=300)
    assert same["pixel_ap_difference"] == 0 and same["pixel_ap_p"] == 1.0  # never beats itself
    with pytest.raises(ValueError, match="same cases"):
        paired_comparison(strong, _figures(1.0, seed=0, cases=5))


def test_a_test_set_without_lesions_has_no_pixel_ap() -> None:
    labels = np.zeros(10, bool)
    assert math.isnan(WeightedAP(labels, np.arange(10.0), np.zeros(10, int))(np.ones(1)))


@pytest.mark.parametrize("seed", [0, 1])
def test_weighted_auroc_matches_scikit_learn_with_sample_weights(seed: int) -> None:
    rng = np.random.default_rng(seed)
    labels = rng.random(400) < 0.3
    scores = np.round(rng.random(400) + labels * 0.3, 1)  # heavy ties
    case = rng.integers(0, 9, 400)
    case_weight = rng.integers(0, 3, 9).astype(float)
    reference = roc_auc_score(labels, scores, sample_weight=case_weight[case])
    assert WeightedAUROC(labels, scores, case)(case_weight) == pytest.approx(reference, abs=1e-12)
