"""Overlapping patches of an image and the projection of per-patch values back to pixels.

InvDetect (Ma et al., Sec. 2) judges b x b patches taken by a sliding window with stride
b / 2 and turns patch-wise values into a pixel-wise map with Eq. 1::

    A(p) = sum_{i in D_p} w_p^i s^i / sum_{i in D_p} w_p^i,
    w_p^i = exp(-||p - c^i||^2 / omega^2),  omega = b / 4,

D_p being the patches that contain pixel p and c^i the centre of patch i. The window
positions come from MONAI's ``dense_patch_slices``, which snaps the last window of each
axis to the border, so every pixel is covered whatever the image size. The same weighted
average projects any per-patch vector (InvDetect's noise latents, for the aggregate r_p of
its refinement) and is written here because MONAI's sliding-window inferer expects a
network that returns a b x b output per patch, not one value per patch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from monai.data.utils import dense_patch_slices
from torch import Tensor

from anodiff.errors import AnodiffError


@dataclass(frozen=True)
class PatchGrid:
    """The sliding-window positions of b x b patches (stride b / 2) on an H x W image."""

    size: int  # b
    spatial: tuple[int, int]  # (H, W)
    corners: tuple[tuple[int, int], ...]  # top-left (row, column) of every window

    @classmethod
    def create(cls, spatial: tuple[int, int], size: int) -> PatchGrid:
        """Windows of side ``size`` with stride ``size // 2``, the last snapped to the border."""
        h, w = (int(v) for v in spatial)
        if size < 2 or size > min(h, w):
            raise AnodiffError(f"patch size must be in [2, {min(h, w)}] for {h} x {w} images, "
                               f"got {size}")
        stride = max(size // 2, 1)
        slices = dense_patch_slices((h, w), (size, size), (stride, stride))
        corners = tuple((int(rows.start), int(cols.start)) for rows, cols in slices)
        return cls(size=size, spatial=(h, w), corners=corners)

    def __len__(self) -> int:
        return len(self.corners)

    def weights(self) -> Tensor:
        """Eq. 1's proximity weight of every pixel of a patch to its centre, (b, b)."""
        b = self.size
        offset = torch.arange(b, dtype=torch.float32) - (b - 1) / 2
        omega = b / 4
        return torch.exp(-(offset[:, None] ** 2 + offset[None, :] ** 2) / omega**2)

    def extract(self, images: Tensor) -> Tensor:
        """Patches (N, P, C, b, b) of images (N, C, H, W), in the order of ``corners``."""
        b = self.size
        return torch.stack([images[..., r:r + b, c:c + b] for r, c in self.corners], dim=1)

    def aggregate(self, values: Tensor, valid: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Eq. 1 for per-patch values (N, P, K): the pixel map (N, K, H, W) and its coverage.

        ``valid`` (N, P) bool leaves patches out (their pixels average over the others);
        the second result (N, H, W) is the summed weight, zero where no valid patch covers a
        pixel (the map is zero there).
        """
        n, p, k = values.shape
        if p != len(self):
            raise AnodiffError(f"expected values for {len(self)} patches, got {p}")
        b, (h, w) = self.size, self.spatial
        weight = self.weights().to(values)
        keep = torch.ones(n, p, dtype=values.dtype, device=values.device) if valid is None \
            else valid.to(values)
        total = values.new_zeros(n, k, h, w)
        norm = values.new_zeros(n, h, w)
        for j, (r, c) in enumerate(self.corners):
            wj = keep[:, j, None, None] * weight  # (N, b, b)
            total[:, :, r:r + b, c:c + b] += values[:, j, :, None, None] * wj[:, None]
            norm[:, r:r + b, c:c + b] += wj
        return torch.where(norm[:, None] > 0, total / norm[:, None].clamp_min(1e-30), 0), norm
