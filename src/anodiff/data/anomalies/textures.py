"""Default "other source" images for Baugh's task 1: textures that ship with scikit-image.

Task 1 blends in patches "from a different dataset or modality" (Baugh 2024), so the
model also learns to remove texture that is foreign to the whole domain. A user of anodiff
has only their own scans and no download is allowed, so the default source is the three
texture photographs bundled in scikit-image's wheel (``skimage.data.brick``, ``grass``,
``gravel``; 512² greyscale, no network access needed). They are rescaled so that one
texture pixel has the size it would have on Baugh's 128² inputs: side ``4 x size`` for
images of side ``size`` (256² at 64²).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from skimage import data as skdata
from skimage.transform import resize

from anodiff.errors import AnodiffError

TEXTURES = ("brick", "grass", "gravel")
_BAUGH_SIDE = 128  # the side of Baugh's inputs, which the texture scale is matched to


@lru_cache(maxsize=4)
def texture_sources(size: int) -> np.ndarray:
    """The bundled textures as float32 (3, 1, S, S) in [0, 1], S = 512 * size / 128.

    S is at least ``size``, so every crop :func:`~.blending.crop_other_source` takes fits.
    The array is cached and read-only.
    """
    if size < 1:
        raise AnodiffError(f"texture_sources: size must be >= 1, got {size}")
    out = []
    for name in TEXTURES:
        image = getattr(skdata, name)().astype(np.float32) / 255.0
        side = max(size, round(image.shape[0] * size / _BAUGH_SIDE))
        out.append(resize(image, (side, side), anti_aliasing=True, preserve_range=True))
    stacked = np.clip(np.stack(out)[:, None], 0.0, 1.0).astype(np.float32)
    stacked.flags.writeable = False
    return stacked
