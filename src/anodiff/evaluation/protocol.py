"""The evaluation protocol: one function from a test set's maps to ``metrics.json``.

Keys (design brief): ``image_auroc, image_ap, image_f1, pixel_auroc, pixel_ap, dice_max,
dice_otsu, precision_otsu, hd95_otsu, vs_otsu, healthy_residual, seconds_per_image,
nfe_per_image, n_images`` plus recall/IoU at the Otsu masks, lesion-wise detection,
healthy false-positive area, figures at a healthy-calibrated threshold when one is given,
per-volume figures when case ids are given, and ``image_auroc_foreground_area``: the image
AUROC of a trivial score, the share of the slice that is foreground. On brain slices,
lesions that need depth (or mass) occur only in large central slices, so slice size alone
can separate diseased from healthy slices; a method's ``image_auroc`` means little unless it
beats this reference (0.74 to 0.85 on the tracks of the embedded benchmark). The
conventions (pooling, empty masks) are those of :mod:`anodiff.evaluation.metrics`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from anodiff.evaluation.metrics import (
    Overlap,
    auroc,
    average_precision,
    best_dice,
    check_shapes,
    f1_at,
    hd95,
    lesion_detection,
)
from anodiff.scoring.postprocess import PostProcess
from anodiff.scoring.thresholds import above_threshold, otsu_threshold, per_image_otsu


def _mean(values: Sequence[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else math.nan


def mask_metrics(predicted: np.ndarray, truth: np.ndarray, suffix: str,
                 spacing: tuple[float, ...] | None = None) -> dict[str, float]:
    """Dice, precision, recall, IoU, VS and HD95 per image, averaged over the images given."""
    overlaps = [Overlap.of(p, t) for p, t in zip(predicted, truth, strict=True)]
    return {
        f"dice_{suffix}": _mean([o.dice for o in overlaps]),
        f"precision_{suffix}": _mean([o.precision for o in overlaps]),
        f"recall_{suffix}": _mean([o.recall for o in overlaps]),
        f"iou_{suffix}": _mean([o.iou for o in overlaps]),
        f"vs_{suffix}": _mean([o.volumetric_similarity for o in overlaps]),
        f"hd95_{suffix}": _mean([hd95(p, t, spacing) for p, t in zip(predicted, truth,
                                                                   strict=True)]),
    }


def evaluate(
    maps: np.ndarray,
    truth: np.ndarray,
    scores: np.ndarray,
    *,
    labels: np.ndarray | None = None,
    foreground: np.ndarray | None = None,
    predicted: np.ndarray | None = None,
    images: np.ndarray | None = None,
    pseudo_healthy: np.ndarray | None = None,
    image_threshold: float | None = None,
    pixel_threshold: float | None = None,
    case_ids: Sequence[str] | None = None,
    postprocess: PostProcess | None = None,
    seconds_per_image: float = math.nan,
    nfe_per_image: float = math.nan,
) -> dict[str, Any]:
    """All metrics of one method on one test set.

    ``maps`` (N, H, W), ``truth`` (N, H, W) bool, ``scores`` (N,). ``labels`` default to
    "the slice's mask has a positive pixel". The ``*_otsu`` figures use each map's own Otsu
    threshold (Wolleb's protocol), the ``*_global_otsu`` ones a single Otsu threshold over
    all test foreground pixels; ``predicted``, the method's own mask if it has one, adds
    ``*_own`` figures. ``image_threshold`` (on scores) and
    ``pixel_threshold`` (on maps) come from healthy validation data; without them
    ``image_f1`` and the ``*_fpr`` figures are NaN. ``images`` and ``pseudo_healthy``
    (N, C, H, W) give the healthy reconstruction residual.
    """
    post = postprocess or PostProcess()
    check_shapes(maps, truth, foreground, predicted)
    truth = truth.astype(bool)
    labels = truth.reshape(len(truth), -1).any(1) if labels is None else labels.astype(bool)
    fg = np.ones_like(truth) if foreground is None else foreground.astype(bool)
    maps = post.maps(maps, fg)
    anomalous = labels & truth.reshape(len(truth), -1).any(1)
    healthy = ~labels

    pixels_truth, pixels_score = truth[anomalous][fg[anomalous]], maps[anomalous][fg[anomalous]]
    best = best_dice(pixels_truth, pixels_score)
    masks = post.masks(per_image_otsu(maps, fg))
    detection = lesion_detection(masks, truth)
    results: dict[str, Any] = {
        "image_auroc": auroc(labels, scores),
        "image_ap": average_precision(labels, scores),
        "image_f1": f1_at(labels, scores, image_threshold) if image_threshold is not None
        else math.nan,
        "image_auroc_foreground_area": math.nan if foreground is None
        else auroc(labels, fg.reshape(len(fg), -1).mean(1)),
        "pixel_auroc": auroc(pixels_truth, pixels_score),
        "pixel_ap": average_precision(pixels_truth, pixels_score),
        "dice_max": best.dice,
        "dice_max_threshold": best.threshold,
        **mask_metrics(masks[anomalous], truth[anomalous], "otsu"),
        "lesion_detection_rate": detection.detection_rate,
        "lesion_false_positives_per_image": detection.false_positives / len(maps),
        "healthy_fp_area": _mean([float(m[f].mean()) for m, f in zip(masks[healthy], fg[healthy],
                                                                      strict=True) if f.any()]),
        "healthy_residual": math.nan,
        "seconds_per_image": seconds_per_image,
        "nfe_per_image": nfe_per_image,
        "n_images": int(len(maps)),
        "n_anomalous": int(anomalous.sum()),
        "postprocess": post.to_dict(),
    }
    if images is not None and pseudo_healthy is not None and healthy.any():
        residual = np.abs(images[healthy] - pseudo_healthy[healthy]).sum(1)
        results["healthy_residual"] = float(residual[fg[healthy]].mean())
    if anomalous.any():  # one Otsu threshold for the whole test set (pooled foreground)
        global_t = otsu_threshold(maps, fg)
        results.update(mask_metrics(post.masks((maps > global_t) & fg)[anomalous],
                                    truth[anomalous], "global_otsu"))
    if predicted is not None:
        results.update(mask_metrics(post.masks(predicted.astype(bool))[anomalous],
                                    truth[anomalous], "own"))
    if pixel_threshold is not None:
        at_threshold = post.masks(above_threshold(maps, pixel_threshold, fg))
        results.update(mask_metrics(at_threshold[anomalous], truth[anomalous], "fpr"))
        results["pixel_threshold"] = pixel_threshold
    if case_ids is not None:
        results.update(volume_metrics(masks, truth, case_ids))
    return results


def volume_metrics(masks: np.ndarray, truth: np.ndarray, case_ids: Sequence[str]
                   ) -> dict[str, float]:
    """Dice and lesion detection per 3-D case (slices stacked in order), averaged over cases.

    Volumes without lesions are skipped for Dice (it is 1 or 0 by convention there, which
    says nothing about localisation); lesion components are counted in 3-D.
    """
    ids = np.asarray(case_ids)
    dices, lesions, detected = [], 0, 0
    for case in dict.fromkeys(ids.tolist()):
        pred, true = masks[ids == case], truth[ids == case]
        found = lesion_detection(pred, true)
        lesions, detected = lesions + found.lesions, detected + found.detected
        if true.any():
            dices.append(Overlap.of(pred, true).dice)
    return {
        "volume_dice_otsu": _mean(dices),
        "volume_lesion_detection_rate": detected / lesions if lesions else math.nan,
        "n_volumes": len(set(ids.tolist())),
    }
