"""Thresholds that turn an anomaly map into a mask.

* per-image Otsu (Wolleb 2022) and one global Otsu over a whole test set
  (``skimage.filters.threshold_otsu`` on the foreground pixels);
* a threshold at a target false-positive rate on *healthy validation* pixels (Bercea et
  al.'s protocol): the deployable choice, calibrated without lesion labels; a pixel is
  flagged when its value reaches the threshold (:func:`above_threshold`), both for a
  method's own ``healthy_fpr`` mask and for the evaluation's ``*_fpr`` figures;
* the best-Dice threshold lives in :func:`anodiff.evaluation.metrics.best_dice` — an oracle
  that uses the test labels, reported but never deployable.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

import numpy as np
from skimage.filters import threshold_otsu

from anodiff.errors import AnodiffError

ArrayLike = TypeVar("ArrayLike")  # a numpy array or a torch tensor


def _foreground_values(values: np.ndarray, foreground: np.ndarray | None) -> np.ndarray:
    return values[foreground.astype(bool)] if foreground is not None else values.ravel()


def otsu_threshold(values: np.ndarray, foreground: np.ndarray | None = None) -> float:
    """Otsu's threshold of the foreground values; +inf (nothing flagged) for a flat map.

    As in scikit-image, pixels strictly above it are foreground. The histogram has 256 bins
    (scikit-image's default, as in Wolleb's code), so the threshold is only as fine as
    1/256 of the map's range.
    """
    pixels = _foreground_values(values, foreground)
    if pixels.size == 0 or pixels.min() == pixels.max():
        return float("inf")
    return float(threshold_otsu(pixels))


def per_image_otsu(maps: np.ndarray, foreground: np.ndarray | None = None) -> np.ndarray:
    """Masks (N, H, W) from each map's own Otsu threshold, restricted to the foreground."""
    masks = np.zeros(maps.shape, dtype=bool)
    for i, amap in enumerate(maps):
        fg = None if foreground is None else foreground[i]
        masks[i] = amap > otsu_threshold(amap, fg)
    return masks if foreground is None else masks & foreground.astype(bool)


def healthy_fpr_threshold(healthy_maps: np.ndarray, fpr: float = 0.01,
                          foreground: np.ndarray | None = None) -> float:
    """The threshold above which a fraction ``fpr`` of healthy foreground pixels lie."""
    if not 0 < fpr < 1:
        raise AnodiffError(f"target false-positive rate must be in (0, 1), got {fpr}")
    pixels = _foreground_values(healthy_maps, foreground)
    if pixels.size == 0:
        raise AnodiffError("no healthy validation pixels to calibrate the threshold on")
    return float(np.quantile(pixels, 1 - fpr, method="higher"))


def above_threshold(maps: ArrayLike, threshold: float, foreground: ArrayLike | None = None
                    ) -> ArrayLike:
    """Masks of the pixels whose map value reaches ``threshold`` (inside the foreground).

    Works on numpy arrays and torch tensors alike (the same two operators), so a method's
    mask and the evaluation's ``*_fpr`` figures flag exactly the same pixels.
    """
    flagged = maps >= threshold
    return flagged if foreground is None else flagged & foreground


def case_shares(flagged: ArrayLike, foreground: ArrayLike, cases: Sequence[str]
                ) -> dict[str, float]:
    """The share of each case's foreground pixels that ``flagged`` (N, H, W) marks, the case
    (N,) of every slice given (a case without foreground scores 0): the case score of
    :mod:`anodiff.scoring.rules`, for the detector and the evaluation alike. Arrays or CPU
    tensors."""
    flags = np.asarray(flagged, dtype=bool) & np.asarray(foreground, dtype=bool)
    fg, ids = np.asarray(foreground, dtype=bool), np.asarray(cases)
    return {case: float(flags[ids == case].sum()) / max(int(fg[ids == case].sum()), 1)
            for case in dict.fromkeys(ids.tolist())}
