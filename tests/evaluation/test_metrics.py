"""Metrics against brute-force computations and MONAI, including the edge cases."""

import math

import numpy as np
import pytest
import torch
from monai.metrics import compute_dice, compute_hausdorff_distance, compute_iou
from scipy import ndimage
from scipy.spatial.distance import cdist

from anodiff.evaluation.metrics import (
    Overlap,
    auroc,
    average_precision,
    best_dice,
    f1_at,
    hd95,
    lesion_detection,
)

RNG = np.random.default_rng(0)


def _random_case(n: int = 300, ties: bool = True) -> tuple[np.ndarray, np.ndarray]:
    labels = RNG.random(n) < 0.3
    scores = RNG.normal(size=n) + labels * 0.8
    if ties:
        scores = np.round(scores, 1)  # many tied scores
    return labels, scores


def brute_auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    """P(score_pos > score_neg) + 0.5 P(tie), over all pairs (Mann-Whitney)."""
    pos, neg = scores[labels], scores[~labels]
    diff = pos[:, None] - neg[None, :]
    return float(((diff > 0) + 0.5 * (diff == 0)).mean())


def brute_ap(labels: np.ndarray, scores: np.ndarray) -> float:
    """sum_k (R_k - R_{k-1}) P_k over the distinct thresholds, from the highest down."""
    ap, previous_recall = 0.0, 0.0
    for t in np.unique(scores)[::-1]:
        flagged = scores >= t
        tp = (flagged & labels).sum()
        recall, precision = tp / labels.sum(), tp / flagged.sum()
        ap += (recall - previous_recall) * precision
        previous_recall = recall
    return ap


def brute_best_dice(labels: np.ndarray, scores: np.ndarray) -> float:
    best = 0.0
    for t in np.unique(scores):
        flagged = scores >= t
        best = max(best, 2 * (flagged & labels).sum() / (flagged.sum() + labels.sum()))
    return best


@pytest.mark.parametrize("ties", [False, True])
def test_ranking_metrics_equal_brute_force(ties: bool) -> None:
    for _ in range(5):
        labels, scores = _random_case(ties=ties)
        assert auroc(labels, scores) == pytest.approx(brute_auroc(labels, scores), abs=1e-12)
        assert average_precision(labels, scores) == pytest.approx(brute_ap(labels, scores),
                                                                  abs=1e-12)
        found = best_dice(labels, scores)
        assert found.dice == pytest.approx(brute_best_dice(labels, scores), abs=1e-12)
        flagged = scores >= found.threshold
        assert 2 * (flagged & labels).sum() / (flagged.sum() + labels.sum()) == \
            pytest.approx(found.dice)


def test_ranking_metrics_edge_cases() -> None:
    scores = RNG.random(50)
    assert math.isnan(auroc(np.zeros(50), scores))  # empty ground truth
    assert math.isnan(auroc(np.ones(50), scores))  # all anomalous
    assert math.isnan(average_precision(np.zeros(50), scores))
    assert math.isnan(best_dice(np.zeros(50), scores).dice)
    labels = RNG.random(50) < 0.2
    constant = np.full(50, 0.3)
    assert auroc(labels, constant) == 0.5
    assert average_precision(labels, constant) == pytest.approx(labels.mean())
    # a constant map can only flag everything: Dice = 2|G| / (N + |G|)
    assert best_dice(labels, constant).dice == pytest.approx(2 * labels.sum() / (50 + labels.sum()))
    assert average_precision(np.ones(50), scores) == 1.0


def test_f1_at_threshold() -> None:
    labels, scores = _random_case(ties=False)
    flagged = scores >= 0.4
    tp = (flagged & labels).sum()
    assert f1_at(labels, scores, 0.4) == pytest.approx(2 * tp / (flagged.sum() + labels.sum()))
    assert math.isnan(f1_at(np.zeros(10), np.zeros(10), 1.0))


def test_overlap_metrics_agree_with_monai() -> None:
    for _ in range(10):
        truth = RNG.random((32, 32)) < 0.2
        pred = RNG.random((32, 32)) < 0.3
        o = Overlap.of(pred, truth)

        def as_onehot(m: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(m[None, None].astype(np.float32))

        assert o.dice == pytest.approx(compute_dice(as_onehot(pred), as_onehot(truth)).item())
        assert o.iou == pytest.approx(compute_iou(as_onehot(pred), as_onehot(truth)).item())
        tp, fp, fn = (pred & truth).sum(), (pred & ~truth).sum(), (~pred & truth).sum()
        assert o.precision == pytest.approx(tp / (tp + fp))
        assert o.recall == pytest.approx(tp / (tp + fn))
        assert o.volumetric_similarity == pytest.approx(1 - abs(fp - fn) / (2 * tp + fp + fn))


def test_overlap_edge_cases() -> None:
    empty, some = np.zeros((8, 8), bool), np.eye(8, dtype=bool)
    assert Overlap.of(empty, empty).dice == 1.0 and Overlap.of(empty, empty).iou == 1.0
    assert Overlap.of(empty, some).dice == 0.0 and math.isnan(Overlap.of(empty, some).precision)
    assert Overlap.of(some, empty).dice == 0.0 and math.isnan(Overlap.of(some, empty).recall)
    assert Overlap.of(some, some).volumetric_similarity == 1.0


def brute_hd95(pred: np.ndarray, truth: np.ndarray, spacing: np.ndarray) -> float:
    """Symmetric 95th percentile of boundary-to-boundary distances (MONAI's definition)."""

    def edge_points(mask: np.ndarray) -> np.ndarray:
        edges = mask & ~ndimage.binary_erosion(mask)
        return np.argwhere(edges) * spacing

    a, b = edge_points(pred), edge_points(truth)
    d = cdist(a, b)
    return max(np.percentile(d.min(1), 95), np.percentile(d.min(0), 95))


@pytest.mark.parametrize("spacing", [(1.0, 1.0), (0.8, 2.5)])
def test_hd95_equals_brute_force(spacing: tuple[float, float]) -> None:
    for _ in range(5):
        truth = ndimage.binary_dilation(RNG.random((40, 40)) < 0.01, iterations=3)
        pred = ndimage.binary_dilation(RNG.random((40, 40)) < 0.01, iterations=2)
        assert hd95(pred, truth, spacing) == pytest.approx(
            brute_hd95(pred, truth, np.asarray(spacing)), rel=1e-5)


def test_hd95_edge_cases() -> None:
    empty, some = np.zeros((10, 20), bool), np.zeros((10, 20), bool)
    some[3:5, 3:5] = True
    assert hd95(empty, empty) == 0.0
    assert hd95(empty, some) == pytest.approx(math.hypot(9, 19))  # image diagonal
    assert hd95(some, some) == 0.0


def test_lesion_detection_counts_components() -> None:
    truth = np.zeros((20, 20), bool)
    truth[1:4, 1:4] = True  # lesion A (found)
    truth[10:12, 10:12] = True  # lesion B (missed)
    pred = np.zeros_like(truth)
    pred[3:6, 3:6] = True  # touches A
    pred[15:17, 1:3] = True  # false positive
    pred[0, 18] = True  # another false positive
    found = lesion_detection(pred, truth)
    assert (found.lesions, found.detected, found.false_positives) == (2, 1, 2)
    assert found.detection_rate == 0.5
    assert math.isnan(lesion_detection(pred, np.zeros_like(truth)).detection_rate)


@pytest.mark.parametrize("spacing", [None, (1.0, 2.5), (0.7, 1.2, 3.0)])
def test_hd95_is_monais_to_the_bit(spacing: tuple[float, ...] | None) -> None:
    """The masks cut to their bounding box here (MONAI's crop skipped) give MONAI's own
    ``compute_hausdorff_distance``, masks on the image border included."""
    rng = np.random.default_rng(len(spacing or ()))
    shape = (9, 11, 8)[-len(spacing):] if spacing else (16, 13)
    for _ in range(25):
        pred = rng.random(shape) < rng.uniform(0.05, 0.4)
        truth = rng.random(shape) < rng.uniform(0.05, 0.4)
        reference = compute_hausdorff_distance(
            torch.from_numpy(pred[None, None]), torch.from_numpy(truth[None, None]),
            include_background=True, percentile=95,
            spacing=None if spacing is None else list(spacing))
        assert hd95(pred, truth, spacing) == float(reference.item())
