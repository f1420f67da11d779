"""Baugh's blending tasks (0 and 1): a patch of another image, Poisson-blended in.

Baugh 2024 (shared notes) use two blending tasks with mixed-gradient Poisson image
editing (:mod:`.poisson`): task 0 takes the patch from another image of the same dataset,
task 1 from a different dataset or modality, so the model must both spot foreign texture
of its own domain and alien texture. The patch region is a random shape from
:mod:`.shapes` (1-4 per image, their union blended in one solve). As in foreign-patch and
Poisson image interpolation (Tan 2021, the origin of this task), the same-dataset
patch comes from the same place in the other image, so it is anatomically plausible there;
the other-source patch comes from a random crop of a random other-source image.
"""

from __future__ import annotations

import numpy as np

from anodiff.data.anomalies._common import (
    check_images,
    check_rng,
    resolve_foreground,
    write_inside,
)
from anodiff.data.anomalies.poisson import mixed_gradient_blend
from anodiff.data.anomalies.shapes import sample_shape_masks
from anodiff.errors import AnodiffError


def partner_indices(targets: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """For each index in ``targets``, a uniformly random *other* index in range(n) (n >= 2)."""
    return (targets + rng.integers(1, n, size=len(targets))) % n


def blend_patches_from(
    images: np.ndarray,
    sources: np.ndarray,
    *,
    rng: np.random.Generator,
    foreground: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Blend the patch of ``sources[i]`` at random shapes into ``images[i]``, same place.

    ``sources`` (N, C, H, W) is aligned with ``images``: one source image per target.
    Returns (corrupted images, masks (N, H, W)), clipped to [0, 1].
    """
    check_images(images)
    check_rng(rng)
    if sources.shape != images.shape or not np.isfinite(sources).all():
        raise AnodiffError(
            f"sources must be finite and shaped like images {images.shape}, got {sources.shape}"
        )
    foreground = resolve_foreground(images, foreground)
    masks = np.stack([stack.any(axis=0) for stack in sample_shape_masks(foreground, rng)])
    return write_inside(images, mixed_gradient_blend(images, sources, masks), masks), masks


def same_source_blend(
    images: np.ndarray,
    *,
    rng: np.random.Generator,
    foreground: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Task 0: blend in patches from other images of the same batch (N >= 2).

    Each image takes its patches from one uniformly drawn other image of the batch.
    Speed for 32 x 1 x 64 x 64, median of 7 calls (measured here, 2 cores, 2026-11-22):
    50-80 ms, about half shape sampling and half the sparse Poisson solve.
    """
    check_images(images)
    check_rng(rng)
    n = images.shape[0]
    if n < 2:
        raise AnodiffError("same_source_blend needs a batch of at least 2 images")
    partners = partner_indices(np.arange(n), n, rng)
    return blend_patches_from(images, images[partners], rng=rng, foreground=foreground)


def crop_other_source(
    other_source: np.ndarray, n: int, like: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """``n`` random crops shaped like ``like`` (N, C, H, W) from random ``other_source`` images.

    ``other_source`` is (M, C or 1, H', W') with H' >= H and W' >= W; a single channel is
    repeated so every channel of the target gets the same foreign patch.
    """
    _, channels, height, width = like.shape
    if (
        not isinstance(other_source, np.ndarray)
        or other_source.ndim != 4
        or other_source.shape[0] == 0
        or other_source.shape[1] not in (1, channels)
        or other_source.shape[2] < height
        or other_source.shape[3] < width
    ):
        shape = getattr(other_source, "shape", type(other_source).__name__)
        raise AnodiffError(
            f"other_source must be an array (M, 1 or {channels}, >= {height}, >= {width}), "
            f"got {shape}"
        )
    if not np.issubdtype(other_source.dtype, np.floating) or not np.isfinite(other_source).all():
        raise AnodiffError("other_source must be a finite float array")
    picks = rng.integers(other_source.shape[0], size=n)
    tops = rng.integers(other_source.shape[2] - height + 1, size=n)
    lefts = rng.integers(other_source.shape[3] - width + 1, size=n)
    rows = tops[:, None] + np.arange(height)
    cols = lefts[:, None] + np.arange(width)
    crops = other_source[
        picks[:, None, None, None],
        np.arange(other_source.shape[1])[:, None, None],
        rows[:, None, :, None],
        cols[:, None, None, :],
    ]
    return np.broadcast_to(crops, (n, channels, height, width))


def other_source_blend(
    images: np.ndarray,
    *,
    rng: np.random.Generator,
    other_source: np.ndarray,
    foreground: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Task 1: blend in patches from ``other_source``, a different dataset or modality.

    ``other_source`` (M, C or 1, H', W'), e.g. natural textures or another MR contrast.
    Speed for 32 x 1 x 64 x 64, median of 7 calls (measured here, 2 cores, 2026-11-22):
    55-90 ms.
    """
    check_images(images)
    check_rng(rng)
    sources = crop_other_source(other_source, images.shape[0], images, rng)
    return blend_patches_from(images, sources, rng=rng, foreground=foreground)
