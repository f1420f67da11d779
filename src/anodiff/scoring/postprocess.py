"""Post-processing of anomaly maps and masks, configurable and recorded with the results.

Maps: background masking (zero outside the foreground) and median filtering (pDDPM,
Behrendt 2024). Masks: morphological opening/closing and removal of components smaller
than a minimum size. Each step is scipy/scikit-image; this module only fixes the order
and records the settings.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import ndimage
from skimage import morphology

from anodiff.errors import AnodiffError


@dataclass(frozen=True)
class PostProcess:
    """Settings; defaults change nothing but the background masking."""

    mask_background: bool = True
    median_size: int = 1  # median filter window (pixels), 1 = off
    opening_radius: int = 0  # disk radius of a binary opening on masks, 0 = off
    closing_radius: int = 0  # disk radius of a binary closing on masks, 0 = off
    min_component_size: int = 0  # drop mask components smaller than this (pixels)

    def __post_init__(self) -> None:
        if self.median_size < 1 or self.median_size % 2 == 0:
            raise AnodiffError(f"median_size must be odd and positive, got {self.median_size}")
        if min(self.opening_radius, self.closing_radius, self.min_component_size) < 0:
            raise AnodiffError("post-processing radii and sizes must be >= 0")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def maps(self, maps: np.ndarray, foreground: np.ndarray | None = None) -> np.ndarray:
        """Filter (N, H, W) maps slice by slice, then zero the background."""
        out = maps.astype(np.float32, copy=True)
        if self.median_size > 1:
            out = ndimage.median_filter(out, size=(1, self.median_size, self.median_size))
        if self.mask_background and foreground is not None:
            out = np.where(foreground.astype(bool), out, 0).astype(np.float32)
        return out

    def masks(self, masks: np.ndarray) -> np.ndarray:
        """Clean (N, H, W) binary masks slice by slice."""
        out = masks.astype(bool, copy=True)
        for i in range(out.shape[0]):
            if self.opening_radius:
                out[i] = ndimage.binary_opening(out[i], morphology.disk(self.opening_radius))
            if self.closing_radius:
                out[i] = ndimage.binary_closing(out[i], morphology.disk(self.closing_radius))
            if self.min_component_size:
                out[i] = morphology.remove_small_objects(out[i],
                                                         max_size=self.min_component_size - 1)
        return out
