"""Uncertainty of the headline figures by resampling cases, and paired comparisons.

Slices of one patient are not independent, so the unit of resampling is the case (a
volume, or an image of the images layout): a resample draws as many cases as there are,
with replacement, and every figure is recomputed with each case weighted by how often it
was drawn. Three figures are resampled (the review's Sec. 4 asks for intervals):

* ``pixel_ap`` — average precision of the pooled brain pixels of the anomalous slices;
  :class:`WeightedAP` sorts the pixels once and recomputes the precision-recall curve from
  per-pixel weights, so a resample costs a cumulative sum over the pixels and one over
  the positives (scikit-learn's
  ``average_precision_score`` with ``sample_weight`` gives the same value, and is the test's
  reference);
* ``image_auroc`` — the ROC AUC of the image scores with the images' case weights
  (:class:`WeightedAUROC`, sorted once like the AP; scikit-learn's ``roc_auc_score`` with
  ``sample_weight`` is the test's reference);
* ``volume_dice_fpr`` — the mean per-case (3-D) Dice at the healthy-FPR operating point
  over the cases with a lesion.

The 95 % interval is the 2.5th and 97.5th percentile of a figure over the resamples. A
paired comparison of two methods on the same cases resamples both with the same weights;
its one-sided p-value is the share of resamples in which method A does not beat method B.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

DEFAULT_RESAMPLES = 1000
FIGURES = ("pixel_ap", "image_auroc", "volume_dice_fpr")


def case_weights(n_cases: int, resamples: int, seed: int) -> np.ndarray:
    """(resamples, n_cases) integer weights: how often each case is drawn in each resample."""
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n_cases, size=(resamples, n_cases))
    offsets = np.arange(resamples)[:, None] * n_cases
    return np.bincount((draws + offsets).ravel(), minlength=resamples * n_cases).reshape(
        resamples, n_cases)


class WeightedAP:
    """Average precision of labelled scores under per-case weights.

    ``case_index`` gives each pixel's case (0 .. n_cases - 1). The pixels are sorted by
    score once; a call with case weights returns ``sum_k (R_k - R_{k-1}) P_k`` over the
    distinct scores (ties form one threshold, as in scikit-learn). Only the thresholds whose
    run of equal scores holds a positive add to the sum (elsewhere recall does not grow), so
    a call takes one cumulative sum of the weights over all pixels (what is claimed) and one
    over the positives (what is found), both read at those thresholds alone.
    """

    def __init__(self, labels: np.ndarray, scores: np.ndarray, case_index: np.ndarray) -> None:
        order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
        sorted_scores = np.asarray(scores, dtype=np.float64)[order]
        positive = np.flatnonzero(np.asarray(labels, dtype=bool).ravel()[order])
        self.case = np.asarray(case_index).ravel()[order]
        self.positive_case = self.case[positive]
        # the last position of every run of equal scores: one threshold per distinct score
        ends = np.r_[np.flatnonzero(np.diff(sorted_scores)), len(sorted_scores) - 1]
        # the thresholds whose run holds a positive
        self.gain_ends = np.unique(ends[np.searchsorted(ends, positive)])
        self.found_by = np.searchsorted(positive, self.gain_ends, side="right") - 1

    def __call__(self, case_weight: np.ndarray) -> float:
        weight = np.asarray(case_weight, dtype=np.float64)
        if len(self.gain_ends) == 0:
            return math.nan
        tp = np.cumsum(weight[self.positive_case])[self.found_by]
        claimed = np.cumsum(weight[self.case])[self.gain_ends]
        if tp[-1] <= 0:
            return math.nan
        precision = np.divide(tp, claimed, out=np.zeros_like(tp), where=claimed > 0)
        recall = tp / tp[-1]
        return float(np.sum(np.diff(recall, prepend=0.0) * precision))


class WeightedAUROC:
    """Area under the ROC curve of labelled scores under per-case weights: the weighted
    share of (positive, negative) pairs the scores order correctly, ties counting half."""

    def __init__(self, labels: np.ndarray, scores: np.ndarray, case_index: np.ndarray) -> None:
        values, group = np.unique(np.asarray(scores, dtype=np.float64), return_inverse=True)
        self.groups = len(values)
        self.group = group.ravel()
        self.positive = np.asarray(labels, dtype=bool).ravel()
        self.case = np.asarray(case_index).ravel()

    def __call__(self, case_weight: np.ndarray) -> float:
        weight = np.asarray(case_weight, dtype=np.float64)[self.case]
        pos = np.bincount(self.group, weight * self.positive, minlength=self.groups)
        neg = np.bincount(self.group, weight * ~self.positive, minlength=self.groups)
        if pos.sum() <= 0 or neg.sum() <= 0:
            return math.nan
        below = np.cumsum(neg) - neg  # negatives scoring strictly lower
        return float(np.sum(pos * (below + neg / 2)) / (pos.sum() * neg.sum()))


@dataclass(frozen=True)
class CaseFigures:
    """One method's headline figures on one test set, as functions of case weights.

    ``cases`` are the test cases in order; ``pixel_ap`` the pooled pixels' weighted AP;
    ``image_auroc`` the images' weighted AUROC; ``case_dice`` the per-case Dice at the FPR
    operating point (NaN for a case without a lesion, or for every case when there is no
    operating point).
    """

    cases: tuple[str, ...]
    pixel_ap: WeightedAP
    image_auroc: WeightedAUROC
    case_dice: np.ndarray

    def figure(self, name: str) -> Callable[[np.ndarray], float]:
        """The figure ``name`` of :data:`FIGURES` as a function of case weights."""
        return {"pixel_ap": self.pixel_ap, "image_auroc": self.image_auroc,
                "volume_dice_fpr": self._volume_dice}[name]

    def _volume_dice(self, case_weight: np.ndarray) -> float:
        known = ~np.isnan(self.case_dice) & (case_weight > 0)
        if not known.any():
            return math.nan
        return float(np.average(self.case_dice[known], weights=case_weight[known]))


def intervals(figures: CaseFigures, resamples: int = DEFAULT_RESAMPLES, seed: int = 0
              ) -> dict[str, float]:
    """``<figure>_ci_low`` / ``<figure>_ci_high``: 95 % case-bootstrap intervals."""
    weights = case_weights(len(figures.cases), resamples, seed)
    out: dict[str, float] = {}
    for name in FIGURES:
        values = np.array([figures.figure(name)(w) for w in weights])
        low, high = (np.nanpercentile(values, [2.5, 97.5]) if np.isfinite(values).any()
                     else (math.nan, math.nan))
        out[f"{name}_ci_low"], out[f"{name}_ci_high"] = float(low), float(high)
    return out


def paired_comparison(a: CaseFigures, b: CaseFigures, resamples: int = DEFAULT_RESAMPLES,
                      seed: int = 0) -> dict[str, float]:
    """For each figure: A's value minus B's on all cases (``<figure>_difference``) and the
    one-sided paired-bootstrap p-value that A does not beat B (``<figure>_p``)."""
    if a.cases != b.cases:
        raise ValueError("a paired comparison needs both methods on the same cases")
    weights = case_weights(len(a.cases), resamples, seed)
    ones = np.ones(len(a.cases))
    out: dict[str, float] = {}
    for name in FIGURES:
        fa, fb = a.figure(name), b.figure(name)
        out[f"{name}_difference"] = fa(ones) - fb(ones)
        differences = np.array([fa(w) - fb(w) for w in weights])
        finite = differences[np.isfinite(differences)]
        out[f"{name}_p"] = float(np.mean(finite <= 0)) if finite.size else math.nan
    return out
