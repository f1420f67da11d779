"""The brain foreground of skull-stripped images: where maps are scored and masks may be.

Convention of the UPD study (Lagogiannis et al.; docs/REFERENCES.md):
skull-stripped MRI has a constant background at its minimum, so the foreground is every
pixel above the image's minimum in any channel. Maps are zeroed outside it, masks never
leave it, and pixel metrics are pooled inside it.
"""

from __future__ import annotations

from torch import Tensor


def foreground(images: Tensor) -> Tensor:
    """Foreground (N, H, W) bool of images (N, C, H, W): above the image minimum in any
    channel."""
    flat_min = images.flatten(2).min(-1).values[..., None, None]
    return (images > flat_min).any(1)
