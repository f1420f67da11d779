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

The figures are reduced case by case (:class:`~anodiff.evaluation.stream.SplitEvaluation`,
which ``anodiff evaluate`` feeds as each case's batches arrive, holding no split-wide map);
this function gives it a split held in memory.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from anodiff.evaluation.metrics import auroc, check_shapes
from anodiff.evaluation.stream import (
    SIZE_BINS_ML,
    CaseOutputs,
    SplitEvaluation,
    residual_sum_per_slice,
)
from anodiff.scoring.postprocess import PostProcess, rows_of_cases


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
    ``uncertainty_auroc_*`` figures. ``case_ids`` (per slice) enable the per-case figures
    (lesions are then matched within each case; without them the slices are one stack),
    ``voxel_ml`` (per case) the lesion volumes, ``pixel_mm`` (per case) HD95 in mm
    (``hd95_unit``; pixels unless every case has a pixel size), ``resamples`` the bootstrap
    intervals.
    """
    check_shapes(maps, truth, foreground, predicted, uncertainty)
    if residual_sums is None and images is not None and pseudo_healthy is not None:
        residual_sums = residual_sum_per_slice(
            images, pseudo_healthy, np.ones(truth.shape, bool) if foreground is None
            else foreground.astype(bool))
    split = SplitEvaluation(by_case=case_ids is not None, postprocess=postprocess,
                            image_threshold=image_threshold, pixel_threshold=pixel_threshold,
                            size_bins_ml=size_bins_ml)
    rows_of = case_rows(case_ids, len(maps))
    sizes = pixel_mm if case_ids is not None and pixel_mm \
        and all(case in pixel_mm for case, _ in rows_of) else {}
    for case, rows in rows_of:
        split.add(CaseOutputs(
            case, maps[rows], truth[rows], np.asarray(scores)[rows],
            voxel_ml=(voxel_ml or {}).get(case), pixel_mm=sizes.get(case),
            **{name: None if values is None else np.asarray(values)[rows] for name, values in
               (("labels", labels), ("foreground", foreground), ("predicted", predicted),
                ("uncertainty", uncertainty), ("residual_sums", residual_sums))}))
    return split.results(resamples, seconds_per_image, nfe_per_image)


def case_rows(case_ids: Sequence[str] | None, n: int) -> list[tuple[str, np.ndarray]]:
    """Each case and its rows, in order of first appearance (without case ids, all ``n``
    rows as one piece)."""
    return [("", np.arange(n))] if case_ids is None else rows_of_cases(case_ids, n)


def uncertainty_auroc(uncertainty: np.ndarray, masks: np.ndarray, truth: np.ndarray,
                      fg: np.ndarray) -> float:
    """AUROC of ``uncertainty`` as a score for "the mask is wrong here" over the foreground
    pixels: 1 when every wrong pixel is more uncertain than every right one, NaN when the
    masks are all right (or all wrong)."""
    return auroc((masks != truth)[fg], uncertainty[fg])
