"""The evaluation protocol: one function from a test set's maps to ``metrics.json``.

Keys (design brief): ``image_auroc, image_ap, image_f1, pixel_auroc, pixel_ap, dice_max,
dice_otsu, precision_otsu, hd95_otsu, vs_otsu, healthy_residual, seconds_per_image,
nfe_per_image, n_images`` plus recall/IoU at the Otsu masks, lesion-wise detection,
healthy false-positive area, figures at a healthy-calibrated threshold when one is given,
figures at the method's own mask when it has one (``*_own``; ``volume_dice_own`` per 3-D
case, lesion-wise F1 and detection by lesion volume as at the FPR threshold: the operating
point a supervised method is trained for), per-volume figures when
case ids are given (``case_dice_fpr``: each lesioned case's Dice at the healthy-FPR
threshold), and ``image_auroc_foreground_area``: the image AUROC of a trivial score, the
share of the slice that is foreground. On brain slices, lesions that need depth (or mass)
occur only in large central slices, so slice size alone
can separate diseased from healthy slices; a method's ``image_auroc`` means little unless it
beats this reference (0.74 to 0.85 on the tracks of the embedded benchmark). The
conventions (pooling, empty masks) are those of :mod:`anodiff.evaluation.metrics`.

**The deployable operating point** (protocol v2; Bercea's protocol, the review Sec. 4): the
threshold fixed on healthy validation slices only, at a stated false-positive rate
(``pixel_threshold``). At it: ``dice_fpr`` (per slice), ``volume_dice_fpr`` (per 3-D case,
over the cases with a lesion), ``lesion_precision_fpr`` / ``lesion_recall_fpr`` /
``lesion_f1_fpr`` (3-D connected components pooled over cases), the detection rate by
lesion volume (``detection_rate_<bin>_fpr`` with ``n_lesions_<bin>``, bins in ml:
``small`` below the first edge, ``large`` from the second) and ``healthy_fp_area_fpr``, the
share of the healthy slices' brain flagged (it should be close to the stated rate), and
``case_auroc_fpr``: how well the case score (the share of a case's brain above the
threshold, as ``anodiff detect`` writes it to scores.csv) separates the cases with a lesion
from those without (NaN unless both are present; ``n_healthy_cases`` says how many).
For a method with an uncertainty map (an ensemble's spread), ``uncertainty_auroc_<rule>``
(``otsu``, ``fpr``, ``own``): how well the uncertainty separates the pixels that rule's mask
gets wrong from those it gets right, over the foreground of every test slice (Wolleb 2022c:
the ensemble's variance marks unreliable pixels; 0.5 is chance).
With ``resamples``, 95 % case-bootstrap intervals for ``pixel_ap``, ``image_auroc`` and
``volume_dice_fpr`` (:mod:`anodiff.evaluation.bootstrap`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from anodiff.evaluation.bootstrap import CaseFigures, intervals
from anodiff.evaluation.metrics import (
    LesionDetection,
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
from anodiff.scoring.thresholds import (
    above_threshold,
    case_shares,
    otsu_threshold,
    per_image_otsu,
)

# Lesion volume strata (ml): small < 1 ml <= medium < 10 ml <= large. WML and small stroke
# lesions fall in the first, tumours mostly in the last (docs/data.md).
SIZE_BINS_ML: tuple[float, float] = (1.0, 10.0)


def _mean(values: Sequence[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else math.nan


def mask_metrics(predicted: np.ndarray, truth: np.ndarray, suffix: str,
                 spacings: Sequence[tuple[float, float] | None] | None = None
                 ) -> dict[str, float]:
    """Dice, precision, recall, IoU, VS and HD95 per image, averaged over the images given;
    HD95 in mm with each image's pixel size in ``spacings``, else in pixels."""
    overlaps = [Overlap.of(p, t) for p, t in zip(predicted, truth, strict=True)]
    spacings = spacings if spacings is not None else [None] * len(predicted)
    return {
        f"dice_{suffix}": _mean([o.dice for o in overlaps]),
        f"precision_{suffix}": _mean([o.precision for o in overlaps]),
        f"recall_{suffix}": _mean([o.recall for o in overlaps]),
        f"iou_{suffix}": _mean([o.iou for o in overlaps]),
        f"vs_{suffix}": _mean([o.volumetric_similarity for o in overlaps]),
        f"hd95_{suffix}": _mean([hd95(p, t, spacing) for p, t, spacing
                                 in zip(predicted, truth, spacings, strict=True)]),
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
    residual_sums: np.ndarray | None = None,
    uncertainty: np.ndarray | None = None,
    image_threshold: float | None = None,
    pixel_threshold: float | None = None,
    case_ids: Sequence[str] | None = None,
    voxel_ml: Mapping[str, float] | None = None,
    pixel_mm: Mapping[str, tuple[float, float]] | None = None,
    size_bins_ml: tuple[float, float] = SIZE_BINS_ML,
    postprocess: PostProcess | None = None,
    resamples: int = 0,
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
    (N, C, H, W) give the healthy reconstruction residual, as do ``residual_sums`` (N,),
    each slice's residual summed over its foreground, without the images (the evaluation
    does not keep a split's pseudo-healthy images), ``uncertainty`` (N, H, W) the
    ``uncertainty_auroc_*`` figures. ``case_ids`` (per slice, a case's
    slices consecutive) enable the per-case figures, ``voxel_ml`` (per case) the lesion
    volumes, ``pixel_mm`` (per case) HD95 in mm (``hd95_unit``; pixels unless every case has
    a pixel size), ``resamples`` the bootstrap intervals.
    """
    post = postprocess or PostProcess()
    check_shapes(maps, truth, foreground, predicted)
    truth = truth.astype(bool)
    labels = truth.reshape(len(truth), -1).any(1) if labels is None else labels.astype(bool)
    fg = np.ones_like(truth) if foreground is None else foreground.astype(bool)
    maps = post.maps(maps, fg, case_ids)
    anomalous = labels & truth.reshape(len(truth), -1).any(1)
    healthy = ~labels

    pixels_truth, pixels_score = truth[anomalous][fg[anomalous]], maps[anomalous][fg[anomalous]]
    spacings = [pixel_mm[c] for c in np.asarray(case_ids)[anomalous]] \
        if case_ids is not None and pixel_mm and set(case_ids) <= set(pixel_mm) else None
    best = best_dice(pixels_truth, pixels_score)
    masks = post.masks(per_image_otsu(maps, fg), case_ids, voxel_ml)
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
        **mask_metrics(masks[anomalous], truth[anomalous], "otsu", spacings),
        "hd95_unit": "pixel" if spacings is None else "mm",
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
    if uncertainty is not None:
        results["uncertainty_auroc_otsu"] = uncertainty_auroc(uncertainty, masks, truth, fg)
    if residual_sums is None and images is not None and pseudo_healthy is not None:
        residual_sums = residual_sum_per_slice(images, pseudo_healthy, fg)
    if residual_sums is not None and fg[healthy].any():
        results["healthy_residual"] = float(residual_sums[healthy].sum() / fg[healthy].sum())
    if anomalous.any():  # one Otsu threshold for the whole test set (pooled foreground)
        global_t = otsu_threshold(maps, fg)
        results.update(mask_metrics(post.masks((maps > global_t) & fg, case_ids, voxel_ml)
                                    [anomalous], truth[anomalous], "global_otsu", spacings))
    if predicted is not None:
        own = post.masks(predicted.astype(bool), case_ids, voxel_ml)
        results.update(mask_metrics(own[anomalous], truth[anomalous], "own", spacings))
        if uncertainty is not None:
            results["uncertainty_auroc_own"] = uncertainty_auroc(uncertainty, own, truth, fg)
        if case_ids is not None:
            results.update(operating_point(own, truth, case_ids,
                                           per_case_dice(own, truth, case_ids), voxel_ml,
                                           size_bins_ml, suffix="own"))
    case_dice: dict[str, float] = {}
    if pixel_threshold is not None:
        at_threshold = post.masks(above_threshold(maps, pixel_threshold, fg), case_ids, voxel_ml)
        results.update(mask_metrics(at_threshold[anomalous], truth[anomalous], "fpr",
                                    spacings))
        results["pixel_threshold"] = pixel_threshold
        if uncertainty is not None:
            results["uncertainty_auroc_fpr"] = uncertainty_auroc(uncertainty, at_threshold,
                                                                 truth, fg)
        results["healthy_fp_area_fpr"] = _mean(
            [float(m[f].mean()) for m, f in zip(at_threshold[healthy], fg[healthy], strict=True)
             if f.any()])
        if case_ids is not None:
            case_dice = per_case_dice(at_threshold, truth, case_ids)
            results.update(operating_point(at_threshold, truth, case_ids, case_dice,
                                           voxel_ml, size_bins_ml))
            results["case_dice_fpr"] = case_dice
            results.update(case_detection(at_threshold, truth, fg, case_ids))
            results["size_bins_ml"] = list(size_bins_ml)
    if case_ids is not None:
        results.update(volume_metrics(masks, truth, case_ids))
        if resamples:
            figures = CaseFigures.of(case_ids, anomalous, truth, maps, fg, labels, scores,
                                     case_dice)
            results.update(intervals(figures, resamples))
    return results


def residual_sum_per_slice(images: np.ndarray, pseudo_healthy: np.ndarray, fg: np.ndarray
                           ) -> np.ndarray:
    """Per slice (N,), float64: the absolute residual ``|image - pseudo-healthy|`` summed
    over the channels and over the slice's foreground ``fg`` (N, H, W): the numerator of
    ``healthy_residual``, which a caller can reduce batch by batch instead of keeping the
    pseudo-healthy images."""
    residual = np.abs(images - pseudo_healthy).sum(1)
    return np.where(fg, residual, 0).reshape(len(residual), -1).sum(1, dtype=np.float64)


def uncertainty_auroc(uncertainty: np.ndarray, masks: np.ndarray, truth: np.ndarray,
                      fg: np.ndarray) -> float:
    """AUROC of ``uncertainty`` as a score for "the mask is wrong here" over the foreground
    pixels: 1 when every wrong pixel is more uncertain than every right one, NaN when the
    masks are all right (or all wrong)."""
    return auroc((masks != truth)[fg], uncertainty[fg])


def per_case_dice(masks: np.ndarray, truth: np.ndarray, case_ids: Sequence[str]
                  ) -> dict[str, float]:
    """3-D Dice of every case with a lesion (its slices stacked in order)."""
    ids = np.asarray(case_ids)
    return {case: Overlap.of(masks[ids == case], truth[ids == case]).dice
            for case in dict.fromkeys(ids.tolist()) if truth[ids == case].any()}


def case_detection(flagged: np.ndarray, truth: np.ndarray, fg: np.ndarray,
                   case_ids: Sequence[str]) -> dict[str, Any]:
    """``case_auroc_fpr``: the AUROC of the case score (each case's share of flagged
    foreground) for "the case has a lesion", and ``n_healthy_cases``."""
    ids = np.asarray(case_ids)
    shares = case_shares(flagged, fg, case_ids)
    lesioned = np.array([truth[ids == c].any() for c in shares])
    return {"case_auroc_fpr": auroc(lesioned, list(shares.values())),
            "n_healthy_cases": int((~lesioned).sum())}


def case_detections(masks: np.ndarray, truth: np.ndarray, case_ids: Sequence[str]
                    ) -> dict[str, LesionDetection]:
    """Lesion-wise detection of every case, its lesions being 3-D connected components."""
    ids = np.asarray(case_ids)
    return {case: lesion_detection(masks[ids == case], truth[ids == case])
            for case in dict.fromkeys(ids.tolist())}


def operating_point(masks: np.ndarray, truth: np.ndarray, case_ids: Sequence[str],
                    case_dice: Mapping[str, float], voxel_ml: Mapping[str, float] | None,
                    size_bins_ml: tuple[float, float], suffix: str = "fpr"
                    ) -> dict[str, float]:
    """Per-case Dice, lesion-wise precision / recall / F1 (pooled over cases) and detection
    by lesion volume of the masks of one rule (``suffix``: ``fpr``, the healthy-FPR
    threshold; ``own``, the method's own mask)."""
    detections = case_detections(masks, truth, case_ids)
    pooled = sum(detections.values(), start=LesionDetection(0, 0, 0))
    return {f"volume_dice_{suffix}": _mean(list(case_dice.values())),
            f"lesion_precision_{suffix}": pooled.precision,
            f"lesion_recall_{suffix}": pooled.detection_rate,
            f"lesion_f1_{suffix}": pooled.f1,
            **size_strata(detections, voxel_ml, size_bins_ml, suffix)}


def size_strata(detections: Mapping[str, LesionDetection], voxel_ml: Mapping[str, float] | None,
                size_bins_ml: tuple[float, float], suffix: str = "fpr") -> dict[str, float]:
    """``detection_rate_<bin>_<suffix>`` and ``n_lesions_<bin>`` for lesions below the first
    edge (small), between the edges (medium) and from the second edge (large); NaN without
    voxel sizes (2-D images)."""
    volume = np.concatenate([found.sizes * (voxel_ml or {}).get(case, math.nan)
                             for case, found in detections.items()])
    hit = np.concatenate([found.found for found in detections.values()])
    small, large = size_bins_ml
    strata = {"small": volume < small, "medium": (volume >= small) & (volume < large),
              "large": volume >= large}
    out: dict[str, float] = {}
    for name, inside in strata.items():
        out[f"detection_rate_{name}_{suffix}"] = float(hit[inside].mean()) if inside.any() \
            else math.nan
        out[f"n_lesions_{name}"] = int(inside.sum())
    return out


def volume_metrics(masks: np.ndarray, truth: np.ndarray, case_ids: Sequence[str]
                   ) -> dict[str, float]:
    """Dice and lesion detection per 3-D case (slices stacked in order), averaged over cases.

    Volumes without lesions are skipped for Dice (it is 1 or 0 by convention there, which
    says nothing about localisation); lesion components are counted in 3-D.
    """
    pooled = sum(case_detections(masks, truth, case_ids).values(),
                 start=LesionDetection(0, 0, 0))
    return {
        "volume_dice_otsu": _mean(list(per_case_dice(masks, truth, case_ids).values())),
        "volume_lesion_detection_rate": pooled.detection_rate,
        "n_volumes": len(set(np.asarray(case_ids).tolist())),
    }
