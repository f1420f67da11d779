"""Anomaly detection and localisation metrics (review Sec. 4 and 6.1).

Conventions, chosen once for every method so numbers are comparable:

* **Image level** — ``image_auroc``, ``image_ap`` from scikit-learn on the image scores;
  ``image_f1`` at a given score threshold.
* **Pixel level** — ``pixel_auroc``, ``pixel_ap`` and ``dice_max`` pool the pixels of the
  *anomalous* test slices inside their foreground masks (as the design brief fixes; healthy
  slices are judged separately by the false-positive area). ``dice_max`` is the best Dice
  over all thresholds, computed exactly as the maximum F1 along scikit-learn's
  precision-recall curve: an oracle, never a deployable result.
* **At a threshold** — Dice, precision, recall, IoU, volumetric similarity and the 95 %
  Hausdorff distance (MONAI) are computed per image and averaged over the anomalous images.
  An image whose prediction is empty gets Dice 0 and the image diagonal as HD95 (the worst
  possible distance), so a method cannot improve its HD95 by predicting nothing.
* **Lesion level** — connected components of the ground truth (8-connected in 2-D, 26 in
  3-D): a lesion is detected if any predicted pixel touches it; predicted components that
  touch no lesion are false positives, reported per image.

Everything takes numpy arrays; ``maps`` are (N, H, W) floats (higher = more anomalous),
masks (N, H, W) bool. 3-D volumes are passed as (N, D, H, W) with ``spacing``.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
from monai.metrics.utils import get_edge_surface_distance
from scipy import ndimage
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

from anodiff.errors import AnodiffError


def _both_classes(labels: np.ndarray) -> bool:
    return 0 < int(labels.sum()) < labels.size


def auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve; NaN when only one class is present (undefined)."""
    labels = np.asarray(labels).astype(bool).ravel()
    return float(roc_auc_score(labels, np.asarray(scores).ravel())) if _both_classes(labels) \
        else math.nan


def average_precision(labels: np.ndarray, scores: np.ndarray) -> float:
    """Average precision (area under the PR curve, step-wise); NaN without positives."""
    labels = np.asarray(labels).astype(bool).ravel()
    if not labels.any():
        return math.nan
    return float(average_precision_score(labels, np.asarray(scores).ravel()))


def f1_at(labels: np.ndarray, scores: np.ndarray, threshold: float) -> float:
    """F1 of the decision ``score >= threshold``; 0 when there is nothing to find or flag."""
    labels = np.asarray(labels).astype(bool).ravel()
    predicted = np.asarray(scores).ravel() >= threshold
    tp = int((labels & predicted).sum())
    denominator = int(labels.sum()) + int(predicted.sum())
    return 2 * tp / denominator if denominator else math.nan


@dataclass(frozen=True)
class BestDice:
    """The best Dice over all thresholds, and the threshold that reaches it."""

    dice: float
    threshold: float


def best_dice(labels: np.ndarray, scores: np.ndarray) -> BestDice:
    """Exact maximum Dice over every threshold ``score >= t`` (Dice = F1 of the pixels).

    scikit-learn's precision-recall curve visits every distinct score, so the maximum of
    ``2PR / (P + R)`` along it is the maximum over all thresholds (ties share a threshold).
    """
    labels = np.asarray(labels).astype(bool).ravel()
    if not labels.any():
        return BestDice(math.nan, math.nan)
    precision, recall, thresholds = precision_recall_curve(labels, np.asarray(scores).ravel())
    precision, recall = precision[:-1], recall[:-1]  # the last point has no threshold
    with np.errstate(invalid="ignore", divide="ignore"):
        dice = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0)
    best = int(np.argmax(dice))
    return BestDice(float(dice[best]), float(thresholds[best]))


@dataclass(frozen=True)
class Overlap:
    """Confusion counts of one binary prediction against its ground truth."""

    tp: int
    fp: int
    fn: int

    @classmethod
    def of(cls, prediction: np.ndarray, truth: np.ndarray) -> Overlap:
        prediction, truth = prediction.astype(bool), truth.astype(bool)
        return cls(int((prediction & truth).sum()), int((prediction & ~truth).sum()),
                   int((~prediction & truth).sum()))

    def _ratio(self, num: int, den: int, empty: float) -> float:
        return num / den if den else empty

    @property
    def dice(self) -> float:
        """2TP / (2TP + FP + FN); 1 when both are empty."""
        return self._ratio(2 * self.tp, 2 * self.tp + self.fp + self.fn, 1.0)

    @property
    def iou(self) -> float:
        """TP / (TP + FP + FN); 1 when both are empty."""
        return self._ratio(self.tp, self.tp + self.fp + self.fn, 1.0)

    @property
    def precision(self) -> float:
        """TP / (TP + FP); NaN for an empty prediction (nothing was claimed)."""
        return self._ratio(self.tp, self.tp + self.fp, math.nan)

    @property
    def recall(self) -> float:
        """TP / (TP + FN); NaN for an empty ground truth."""
        return self._ratio(self.tp, self.tp + self.fn, math.nan)

    @property
    def volumetric_similarity(self) -> float:
        """1 - |FP - FN| / (2TP + FP + FN) (Taha & Hanbury 2015); 1 when both are empty."""
        return 1 - self._ratio(abs(self.fp - self.fn), 2 * self.tp + self.fp + self.fn, 0.0)


def hd95(prediction: np.ndarray, truth: np.ndarray,
         spacing: tuple[float, ...] | None = None) -> float:
    """95th-percentile symmetric Hausdorff distance between two masks (MONAI), in mm.

    Both empty: 0. Exactly one empty: the diagonal of the image (worst case), see the module
    docstring. The value is MONAI's ``compute_hausdorff_distance`` to the bit: its edges and
    surface distances (``get_edge_surface_distance``) on the masks' bounding box with a
    one-pixel margin, cut here by slicing (MONAI's own crop, a transform, cost half of the
    evaluation's HD95 time), then its 95th percentile of each direction's distances.
    """
    prediction, truth = prediction.astype(bool), truth.astype(bool)
    if not prediction.any() and not truth.any():
        return 0.0
    if not prediction.any() or not truth.any():
        steps = np.asarray(spacing if spacing is not None else (1.0,) * truth.ndim)
        return float(np.linalg.norm((np.asarray(truth.shape) - 1) * steps))
    pred, gt = (torch.from_numpy(box) for box in around((prediction, truth)))
    with warnings.catch_warnings():  # MONAI 1.5+ warns about its own internal call
        warnings.filterwarnings("ignore", "monai.metrics.utils get_mask_edges", FutureWarning)
        _, distances, _ = get_edge_surface_distance(
            pred, gt, spacing=None if spacing is None else list(spacing), symmetric=True,
            mask=torch.ones(pred.shape, dtype=torch.bool))  # the whole box: no second crop
    return float(torch.max(torch.stack([torch.quantile(d, 0.95) for d in distances])))


def around(masks: tuple[np.ndarray, ...], margin: int = 1) -> tuple[np.ndarray, ...]:
    """``masks`` cut to the bounding box of their union with ``margin`` pixels on every side,
    padded with background where the margin runs past the image (MONAI's crop for edges:
    ``CropForeground(margin=1, allow_smaller=False)``)."""
    union = np.logical_or.reduce(masks)
    cut, pad = [], []
    for axis, size in enumerate(union.shape):
        present = np.flatnonzero(union.any(axis=tuple(a for a in range(union.ndim)
                                                      if a != axis)))
        low, high = int(present[0]) - margin, int(present[-1]) + margin + 1
        cut.append(slice(max(low, 0), min(high, size)))
        pad.append((max(-low, 0), max(high - size, 0)))
    return tuple(np.pad(mask[tuple(cut)], pad) for mask in masks)


@dataclass(frozen=True, eq=False)
class LesionDetection:
    """Lesion-wise detection: lesions found among all, and the predicted components.

    ``sizes`` (voxels) and ``found`` (bool) have one entry per ground-truth lesion, so
    detection can be stratified by lesion size.
    """

    lesions: int
    detected: int
    false_positives: int
    predicted: int = 0
    sizes: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    found: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))

    @property
    def detection_rate(self) -> float:
        """Lesion-wise recall: the share of lesions any predicted voxel touches."""
        return self.detected / self.lesions if self.lesions else math.nan

    @property
    def precision(self) -> float:
        """Lesion-wise precision: the share of predicted components that touch a lesion
        (NaN when nothing is predicted)."""
        return (self.predicted - self.false_positives) / self.predicted if self.predicted \
            else math.nan

    @property
    def f1(self) -> float:
        """Harmonic mean of lesion-wise precision and recall (0 when either is 0 or
        undefined while lesions exist)."""
        precision, recall = self.precision, self.detection_rate
        if math.isnan(recall):
            return math.nan
        if math.isnan(precision) or precision + recall == 0:
            return 0.0
        return 2 * precision * recall / (precision + recall)

    def __add__(self, other: LesionDetection) -> LesionDetection:
        """The counts of two cases together (lesions are matched within each case)."""
        return LesionDetection(
            self.lesions + other.lesions, self.detected + other.detected,
            self.false_positives + other.false_positives, self.predicted + other.predicted,
            np.concatenate([self.sizes, other.sizes]), np.concatenate([self.found, other.found]))


def lesion_detection(prediction: np.ndarray, truth: np.ndarray) -> LesionDetection:
    """Count connected lesions touched by the prediction, and predicted blobs touching none.

    Full connectivity (8 neighbours in 2-D, 26 in 3-D), computed with ``scipy.ndimage.label``.
    """
    prediction, truth = prediction.astype(bool), truth.astype(bool)
    structure = np.ones((3,) * truth.ndim, dtype=bool)
    lesion_ids, lesions = ndimage.label(truth, structure)
    blob_ids, blobs = ndimage.label(prediction, structure)
    touched = np.unique(lesion_ids[prediction])
    found = np.isin(np.arange(1, lesions + 1), touched)
    sizes = np.bincount(lesion_ids.ravel(), minlength=lesions + 1)[1:]
    matched_blobs = len(np.setdiff1d(np.unique(blob_ids[truth]), [0]))
    return LesionDetection(lesions, int(found.sum()), blobs - matched_blobs, blobs, sizes, found)


def check_shapes(maps: np.ndarray, *others: np.ndarray | None) -> None:
    """Validate that every mask has the shape of the maps (a boundary check)."""
    for other in others:
        if other is not None and other.shape != maps.shape:
            raise AnodiffError(f"shape mismatch: maps {maps.shape} vs masks {other.shape}")
