"""The contract every synthetic anomaly task shares: input checks and the write-back.

Each task takes a batch of images (N, C, H, W) with values in [0, 1] and returns the
corrupted batch and the boolean mask (N, H, W) of the pixels it was allowed to change.
The public task functions are the boundary: they check their arguments here once and raise
:class:`~anodiff.errors.AnodiffError`; :func:`write_inside` then guarantees the two
properties the training code relies on: pixels outside the mask are copied bit for bit,
and the output stays in [0, 1] (the range of the input).
"""

from __future__ import annotations

import numpy as np

from anodiff.errors import AnodiffError


def check_images(images: np.ndarray, name: str = "images") -> None:
    """Raise unless ``images`` is a finite float array (N, C, H, W) with values in [0, 1]."""
    if not isinstance(images, np.ndarray) or images.ndim != 4 or images.size == 0:
        shape = getattr(images, "shape", type(images).__name__)
        raise AnodiffError(f"{name} must be a non-empty numpy array (N, C, H, W), got {shape}")
    if not np.issubdtype(images.dtype, np.floating):
        raise AnodiffError(f"{name} must be a float array, got dtype {images.dtype}")
    if not np.isfinite(images).all():
        raise AnodiffError(f"{name} contains NaN or infinite values")
    if images.min() < 0.0 or images.max() > 1.0:
        raise AnodiffError(
            f"{name} must lie in [0, 1], got [{images.min():.4g}, {images.max():.4g}]"
        )


def check_rng(rng: np.random.Generator) -> None:
    """Raise unless ``rng`` is a numpy Generator (the only source of randomness we accept)."""
    if not isinstance(rng, np.random.Generator):
        raise AnodiffError(
            f"rng must be a numpy.random.Generator (np.random.default_rng(seed)), got "
            f"{type(rng).__name__}"
        )


def resolve_foreground(images: np.ndarray, foreground: np.ndarray | None) -> np.ndarray:
    """The foreground mask (N, H, W) of ``images``: ``foreground`` if given, else inferred.

    The default follows the benchmark convention (Lagogiannis et al.; Baugh 2024):
    a pixel is foreground where any channel exceeds the image's minimum. Every image needs
    a non-empty foreground, since each anomaly must overlap it by at least 50 %.
    """
    n, _, height, width = images.shape
    if foreground is None:
        lowest = images.min(axis=(1, 2, 3), keepdims=True)
        foreground = (images > lowest).any(axis=1)
    elif not isinstance(foreground, np.ndarray) or foreground.shape != (n, height, width):
        shape = getattr(foreground, "shape", type(foreground).__name__)
        raise AnodiffError(
            f"foreground must be an array of shape {(n, height, width)}, got {shape}"
        )
    else:
        foreground = foreground.astype(bool, copy=False)
    empty = np.flatnonzero(~foreground.any(axis=(1, 2)))
    if empty.size:
        raise AnodiffError(
            f"image(s) {empty.tolist()} have no foreground (constant image or empty mask); "
            "drop them before corrupting, an anomaly must overlap the foreground"
        )
    return foreground


def write_inside(images: np.ndarray, candidate: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """``candidate`` clipped to [0, 1] inside ``masks`` (N, H, W), ``images`` exactly elsewhere.

    The same mask applies to every channel, so all channels carry the same spatial anomaly.
    """
    inside = np.clip(candidate, 0.0, 1.0).astype(images.dtype, copy=False)
    return np.where(masks[:, None], inside, images)
