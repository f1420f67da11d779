"""Evaluation-time post-processing of maps and masks, the same for every method, recorded
with the results.

Maps: brain-mask erosion (zero the map within ``erode_brain`` pixels of the brain's edge,
where partial-volume rims light up every reconstruction; pDDPM, Behrendt 2024a), in-plane
median filtering (pDDPM), inter-slice median filtering over ``interslice_median``
neighbouring slices of the same case (a 3-D smoothing that 2-D methods lack), and
background masking. Masks: morphological opening / closing and removal of components
smaller than ``min_component_size`` pixels (2-D) or ``min_lesion_ml`` millilitres (3-D,
per case). Each step is scipy / scikit-image; this module fixes the order and records the
settings. Slices are grouped into cases by ``case_ids`` (in dataset order, so a case's
slices are its consecutive rows); the 3-D steps need them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import ndimage
from skimage import morphology

from anodiff.errors import AnodiffError

MAP_STEPS = ("mask_background", "median_size", "interslice_median", "erode_brain")
"""The settings that change maps (so a threshold calibrated on unfiltered maps no longer
holds its false-positive rate); the others clean masks after a threshold."""


@dataclass(frozen=True)
class PostProcess:
    """Settings; defaults change nothing but the background masking."""

    mask_background: bool = True
    median_size: int = 1  # in-plane median filter window (pixels), 1 = off
    interslice_median: int = 1  # median over this many neighbouring slices of a case, 1 = off
    erode_brain: int = 0  # zero maps within this many pixels of the brain's edge, 0 = off
    opening_radius: int = 0  # disk radius of a binary opening on masks, 0 = off
    closing_radius: int = 0  # disk radius of a binary closing on masks, 0 = off
    min_component_size: int = 0  # drop 2-D mask components smaller than this (pixels)
    min_lesion_ml: float = 0.0  # drop 3-D mask components of a case smaller than this (ml)

    def __post_init__(self) -> None:
        for name in ("median_size", "interslice_median"):
            value = getattr(self, name)
            if value < 1 or value % 2 == 0:
                raise AnodiffError(f"{name} must be odd and positive, got {value}")
        if min(self.opening_radius, self.closing_radius, self.min_component_size,
               self.erode_brain) < 0 or not self.min_lesion_ml >= 0:
            raise AnodiffError("post-processing radii, sizes and volumes must be >= 0")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def changes(self) -> dict[str, Any]:
        """The settings that differ from the defaults (the steps that do something)."""
        default = PostProcess()
        return {k: v for k, v in self.to_dict().items() if v != getattr(default, k)}

    def map_changes(self) -> dict[str, Any]:
        """:meth:`changes` among :data:`MAP_STEPS`."""
        return {k: v for k, v in self.changes().items() if k in MAP_STEPS}

    def map_steps(self) -> PostProcess:
        """This post-processing without its mask steps: what a threshold calibrated on
        filtered maps depends on."""
        return PostProcess(**self.map_changes())

    @property
    def needs_cases(self) -> bool:
        """Whether a step works across slices (it needs the case of every slice)."""
        return self.interslice_median > 1 or self.min_lesion_ml > 0

    def maps(self, maps: np.ndarray, foreground: np.ndarray | None = None,
             case_ids: Sequence[str] | None = None) -> np.ndarray:
        """Filter (N, H, W) maps slice by slice (and across the slices of each case), then
        zero the background (the eroded brain when ``erode_brain``)."""
        out = maps.astype(np.float32, copy=True)
        if self.median_size > 1:
            out = ndimage.median_filter(out, size=(1, self.median_size, self.median_size))
        if self.interslice_median > 1:
            for rows in _case_rows(self, case_ids, len(out)):
                out[rows] = ndimage.median_filter(out[rows], size=(self.interslice_median, 1, 1),
                                                  mode="nearest")
        if self.mask_background and foreground is not None:
            keep = self.brain(foreground)
            out = np.where(keep, out, 0).astype(np.float32)
        return out

    def brain(self, foreground: np.ndarray) -> np.ndarray:
        """The region maps keep: the foreground, eroded by ``erode_brain`` pixels per slice."""
        keep = foreground.astype(bool)
        if self.erode_brain:
            keep = ndimage.binary_erosion(keep, morphology.disk(self.erode_brain)[None],
                                          border_value=0)
        return keep

    def masks(self, masks: np.ndarray, case_ids: Sequence[str] | None = None,
              voxel_ml: Mapping[str, float] | None = None) -> np.ndarray:
        """Clean (N, H, W) binary masks slice by slice, then drop 3-D components of a case
        smaller than ``min_lesion_ml`` (``voxel_ml``: the volume of a voxel of each case)."""
        out = masks.astype(bool, copy=True)
        for i in range(out.shape[0]):
            if self.opening_radius:
                out[i] = ndimage.binary_opening(out[i], morphology.disk(self.opening_radius))
            if self.closing_radius:
                out[i] = ndimage.binary_closing(out[i], morphology.disk(self.closing_radius))
            if self.min_component_size:
                out[i] = morphology.remove_small_objects(out[i],
                                                         max_size=self.min_component_size - 1)
        if self.min_lesion_ml > 0:
            ids = np.asarray(case_ids)
            for rows in _case_rows(self, case_ids, len(out)):
                case = str(ids[rows][0])
                ml = (voxel_ml or {}).get(case, float("nan"))
                if not ml > 0:
                    raise AnodiffError(f"min_lesion_ml needs the voxel size of case {case!r}, "
                                       "which a 2-D image lacks (3-D volumes only)")
                out[rows] = _drop_small(out[rows], self.min_lesion_ml / ml)
        return out


def _case_rows(post: PostProcess, case_ids: Sequence[str] | None, n: int) -> list[np.ndarray]:
    """The rows of each case, in order (a 3-D step without case ids is refused)."""
    if case_ids is None:
        raise AnodiffError(f"post-processing {post.to_dict()} works across slices and needs "
                           "each slice's case")
    return [rows for _, rows in rows_of_cases(case_ids, n)]


def rows_of_cases(case_ids: Sequence[str], n: int) -> list[tuple[str, np.ndarray]]:
    """Each case of ``n`` slices and its rows (ascending), the cases in order of first
    appearance; one sort, however many cases (an images dataset has one a slice)."""
    ids = np.asarray(case_ids)
    if len(ids) != n:
        raise AnodiffError(f"{len(ids)} case ids for {n} slices")
    names, first, inverse = np.unique(ids, return_index=True, return_inverse=True)
    grouped = np.split(np.argsort(inverse, kind="stable"),
                       np.cumsum(np.bincount(inverse, minlength=len(names)))[:-1])
    return [(names[k].item(), grouped[k]) for k in np.argsort(first)]


def _drop_small(volume: np.ndarray, min_voxels: float) -> np.ndarray:
    """``volume`` without its 26-connected components of fewer than ``min_voxels`` voxels."""
    labels, count = ndimage.label(volume, np.ones((3, 3, 3), dtype=bool))
    if count == 0:
        return volume
    sizes = np.bincount(labels.ravel())
    keep = sizes >= min_voxels
    keep[0] = False
    return keep[labels]
