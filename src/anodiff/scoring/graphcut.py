"""Spatial contiguity refinement: a binary mask from an anomaly map by an exact graph cut.

InvDetect's SCR (Ma et al., Eq. 2-4) labels every pixel y_p in {0 normal, 1 abnormal} by

    min_y  sum_p Phi(y_p; A(p)) + lambda sum_{(p,q) 4-neighbours} alpha_pq [y_p != y_q],
    Phi(y; A) = -y log sigmoid(A) - (1 - y) log(1 - sigmoid(A)),
    alpha_pq = exp(-||r_p - r_q||^2 / tau^2),

A being the signed anomaly map (> 0 abnormal) and r_p a feature vector per pixel. The
energy is submodular, so a minimum s-t cut gives its exact minimum; the cut is computed by
PyMaxflow (Boykov-Kolmogorov; the optional ``anodiff[graphcut]``). Pixels outside the
region of interest (the brain) stay normal and cut no edge, so the skull-stripped
background neither attracts nor repels a lesion at the brain border.

tau and lambda follow the paper's rules (Sec. 3): tau^2 is the mean squared neighbour
distance on normal images (the GrabCut convention, so a typical neighbour pair weighs
e^-1), and lambda is the smallest value that keeps the detected area on normal images
at or below a budget (1 %).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from torch import Tensor

from anodiff.errors import AnodiffError
from anodiff.extras import require

# lambda candidates of the calibration: 0 (no refinement) and 1/8 ... 4096, doubling.
LAMBDA_CANDIDATES: tuple[float, ...] = (0.0, *(2.0**k for k in range(-3, 13)))
_RIGHT = np.array([[0, 0, 0], [0, 0, 1], [0, 0, 0]])
_DOWN = np.array([[0, 0, 0], [0, 0, 0], [0, 1, 0]])


@dataclass(frozen=True)
class NeighbourDistances:
    """||r_p - r_q||^2 between 4-neighbours: ``right`` (N, H, W-1), ``down`` (N, H-1, W)."""

    right: np.ndarray
    down: np.ndarray

    @classmethod
    def of(cls, features: Tensor) -> NeighbourDistances:
        """From per-pixel feature vectors (N, K, H, W)."""
        right = (features[..., :, 1:] - features[..., :, :-1]).square().sum(1)
        down = (features[..., 1:, :] - features[..., :-1, :]).square().sum(1)
        return cls(right.double().cpu().numpy(), down.double().cpu().numpy())

    def pairs_inside(self, region: np.ndarray) -> np.ndarray:
        """The distances of the neighbour pairs with both pixels in ``region`` (N, H, W)."""
        inside_right = region[..., :, 1:] & region[..., :, :-1]
        inside_down = region[..., 1:, :] & region[..., :-1, :]
        return np.concatenate([self.right[inside_right], self.down[inside_down]])


def tau_from_normal(distances: NeighbourDistances, region: np.ndarray) -> float:
    """tau with tau^2 = the mean squared neighbour distance inside ``region`` of normal images."""
    values = distances.pairs_inside(region)
    mean = float(values.mean()) if values.size else 0.0
    if mean <= 0:
        raise AnodiffError("cannot set tau: the normal images have no neighbouring pixels with "
                           "distinct features inside their foreground")
    return float(np.sqrt(mean))


def graph_cut_mask(score: np.ndarray, right: np.ndarray, down: np.ndarray, lam: float,
                   region: np.ndarray | None = None) -> np.ndarray:
    """The exact minimiser of Eq. 2 for one map.

    ``score`` (H, W) is A; ``right`` (H, W-1) and ``down`` (H-1, W) are the pairwise weights
    alpha (already ``exp(-d / tau^2)``); ``lam`` is lambda >= 0; ``region`` (H, W) bool
    limits the labelling (outside it: normal). Returns the mask (H, W) bool.
    """
    if lam < 0:
        raise AnodiffError(f"lambda must be >= 0, got {lam}")
    h, w = score.shape
    inside = np.ones((h, w), bool) if region is None else region.astype(bool)
    a = np.where(inside, score.astype(np.float64), 0.0)
    cost_abnormal = np.where(inside, np.logaddexp(0, -a), 0.0)  # -log sigmoid(A)
    cost_normal = np.where(inside, np.logaddexp(0, a), 0.0)  # -log(1 - sigmoid(A))
    maxflow = require("maxflow", "graphcut", "the graph-cut refinement (mask: own)")
    graph = maxflow.Graph[float]()
    nodes = graph.add_grid_nodes((h, w))
    if lam > 0:
        pair_right = np.zeros((h, w))
        pair_right[:, :-1] = lam * right * (inside[:, 1:] & inside[:, :-1])
        pair_down = np.zeros((h, w))
        pair_down[:-1, :] = lam * down * (inside[1:, :] & inside[:-1, :])
        graph.add_grid_edges(nodes, weights=pair_right, structure=_RIGHT, symmetric=True)
        graph.add_grid_edges(nodes, weights=pair_down, structure=_DOWN, symmetric=True)
    # A node that ends on the sink side (abnormal) has its source link cut and pays the
    # source capacity; one on the source side (normal) pays the sink capacity.
    graph.add_grid_tedges(nodes, cost_abnormal, cost_normal)
    graph.maxflow()
    return graph.get_grid_segments(nodes) & inside


def refine_masks(scores: np.ndarray, distances: NeighbourDistances, tau: float, lam: float,
                 region: np.ndarray) -> np.ndarray:
    """:func:`graph_cut_mask` for maps (N, H, W) with alpha = exp(-distance / tau^2)."""
    if tau <= 0:
        raise AnodiffError(f"tau must be > 0, got {tau}")
    return np.stack([
        graph_cut_mask(scores[i], np.exp(-distances.right[i] / tau**2),
                       np.exp(-distances.down[i] / tau**2), lam, region[i])
        for i in range(len(scores))])


def detected_area(masks: np.ndarray, region: np.ndarray) -> float:
    """The fraction of region pixels flagged, pooled over the images."""
    total = int(region.sum())
    return float((masks & region).sum() / total) if total else 0.0


@dataclass(frozen=True)
class LambdaChoice:
    """The chosen lambda, the area it flags on normal images, and the whole search."""

    lam: float
    area: float
    within_budget: bool
    areas: dict[float, float]  # every candidate's flagged area


def calibrate_lambda(scores: np.ndarray, distances: NeighbourDistances, tau: float,
                     region: np.ndarray, max_area: float = 0.01,
                     candidates: tuple[float, ...] = LAMBDA_CANDIDATES,
                     tolerance: float = 0.1) -> LambdaChoice:
    """The paper's rule: the smallest lambda whose masks on normal images flag <= ``max_area``.

    When no candidate meets the budget (the one-class boundary itself flags far more than
    the budget, so that only merging whole regions would), the rule is undefined; then the
    smallest lambda whose area is within ``tolerance`` (relative) of the smallest area
    reached is taken. Taking the largest lambda instead merges whole brains into one label
    (measured: Dice 0.04 on tumour slices against 0.28 at lambda = 256; docs/BENCHMARKS.md).
    """
    areas: dict[float, float] = {}
    for lam in sorted(candidates):
        areas[float(lam)] = detected_area(refine_masks(scores, distances, tau, lam, region),
                                          region)
        if areas[float(lam)] <= max_area:
            return LambdaChoice(float(lam), areas[float(lam)], True, areas)
    least = min(areas.values())
    lam = min(k for k, v in areas.items() if v <= least * (1 + tolerance))
    return LambdaChoice(lam, areas[lam], False, areas)
