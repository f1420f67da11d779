"""Baugh's deformation tasks (2 and 3): radial pull toward (sink) or push away (source).

Baugh 2024 (shared notes): a radial push around a centre inside the anomaly mask, by
a push distance of a few pixels; a sink pulls the tissue toward the centre, a source pushes
it outward, mimicking mass effect and atrophy. The exact field is not published; ours is:

    output(p) = input(p + s k W(p) (p - c)),     s = +1 (sink) or -1 (source),

sampled bilinearly. ``c`` is a random point in the inner half of the shape (by distance to
its edge), ``W`` rises smoothly (smoothstep) from 0 on the shape's boundary pixels to 1 at
its deepest pixel, so the displacement is 0 at the mask boundary and continuous, and ``k``
scales the largest displacement to the push distance. A sink samples farther out, so a
ring around ``c`` shrinks; a source samples closer in, so it grows. ``k`` is capped at 90 %
of the scale at which the map's Jacobian determinant first vanishes (:func:`_fold_limit`),
so the image never folds over itself; this shortens the push only in thin shapes. Push
distances are drawn as a fraction of the image size: 1.5 %...4 % (2-5 px at Baugh's 128^2).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from anodiff.data.anomalies._common import (
    check_images,
    check_rng,
    resolve_foreground,
    write_inside,
)
from anodiff.data.anomalies.shapes import sample_shape_masks
from anodiff.errors import AnodiffError

PUSH = (0.015, 0.04)  # push distance range, fraction of the image size
_FOLD_MARGIN = 0.9  # use at most this fraction of the largest fold-free scale


def _depth(mask: np.ndarray) -> np.ndarray:
    """Euclidean distance (H, W) of each mask pixel to the nearest pixel outside it.

    Outside the image counts as outside the mask. Computed on the mask's bounding box.
    """
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    depth = np.zeros(mask.shape)
    depth[box] = ndimage.distance_transform_edt(np.pad(mask[box], 1))[1:-1, 1:-1]
    return depth


def radial_offsets(
    mask: np.ndarray, centre: tuple[float, float], push: float, *, sink: bool
) -> np.ndarray:
    """Sampling offsets (2, H, W), rows then columns, of one radial deformation.

    ``mask`` (H, W) is the shape, ``centre`` (row, col) a point inside it and ``push`` the
    largest displacement in pixels (shortened where it would fold the image). Offsets are 0
    outside the mask and on its boundary pixels (those next to a pixel outside it).
    """
    offsets = np.zeros((2, *mask.shape))
    if not mask.any():
        return offsets
    depth = _depth(mask)
    deepest = depth.max()
    if deepest <= 1.0:  # one pixel thick: every pixel is a boundary pixel
        return offsets
    ramp = np.clip((depth - 1.0) / (deepest - 1.0), 0.0, 1.0)
    weight = ramp * ramp * (3.0 - 2.0 * ramp)  # smoothstep: flat at both ends
    radial = np.indices(mask.shape, dtype=float) - np.asarray(centre, float)[:, None, None]
    field = weight * radial  # the offsets for k = 1, s = +1
    reach = np.hypot(field[0], field[1]).max()
    if reach == 0.0:
        return offsets
    sign = 1.0 if sink else -1.0
    scale = min(push / reach, _FOLD_MARGIN * _fold_limit(sign * field))
    return sign * scale * field


def _fold_limit(field: np.ndarray) -> float:
    """The smallest k > 0 at which the map p -> p + k ``field`` (2, H, W) folds somewhere.

    With G the central-difference Jacobian of ``field`` (``np.gradient``), the map's
    Jacobian determinant at each pixel is det(I + k G) = 1 + k tr(G) + k^2 det(G); it is 1
    at k = 0, so the map stays fold-free up to the smallest positive root over all pixels.
    Roots of 1 + b k + a k^2 are written 2 / (-b -+ sqrt(b^2 - 4 a)), stable as a -> 0.
    Returns inf if no pixel ever folds.
    """
    (g_rr, g_rc), (g_cr, g_cc) = np.gradient(field[0]), np.gradient(field[1])
    linear, quadratic = g_rr + g_cc, g_rr * g_cc - g_rc * g_cr
    discriminant = linear * linear - 4.0 * quadratic
    real = discriminant >= 0.0
    root = np.sqrt(discriminant[real])
    with np.errstate(divide="ignore"):
        roots = np.concatenate([2.0 / (-linear[real] - root), 2.0 / (-linear[real] + root)])
    positive = roots[roots > 0.0]
    return float(positive.min()) if positive.size else np.inf


def warp(images: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """``images`` (N, C, H, W) resampled at p + ``offsets`` (N, 2, H, W), bilinear, float64.

    Only pixels with a non-zero offset are interpolated; the others are copied, and
    coordinates beyond the border take the nearest border value.
    """
    n, channels, height, width = images.shape
    out = images.astype(np.float64)
    moved = np.nonzero((offsets != 0).any(axis=1))  # (image, row, col) indices
    if moved[0].size == 0:
        return out
    planes = (moved[0][:, None] * channels + np.arange(channels)).ravel()
    rows = np.repeat(moved[1] + offsets[moved[0], 0, moved[1], moved[2]], channels)
    cols = np.repeat(moved[2] + offsets[moved[0], 1, moved[1], moved[2]], channels)
    values = ndimage.map_coordinates(
        out.reshape(n * channels, height, width),
        np.stack([planes.astype(float), rows, cols]),
        order=1,
        mode="nearest",
    )
    out[
        np.repeat(moved[0], channels),
        np.tile(np.arange(channels), moved[0].size),
        np.repeat(moved[1], channels),
        np.repeat(moved[2], channels),
    ] = values
    return out


def _pick_centre(mask: np.ndarray, rng: np.random.Generator) -> tuple[float, float]:
    """A random point of the inner half of ``mask`` (by depth), jittered within its pixel."""
    depth = _depth(mask)
    rows, cols = np.nonzero(depth >= 0.5 * depth.max())
    k = rng.integers(rows.size)
    jitter = rng.uniform(-0.5, 0.5, size=2)
    return float(rows[k] + jitter[0]), float(cols[k] + jitter[1])


def _radial_deformation(
    images: np.ndarray,
    rng: np.random.Generator,
    foreground: np.ndarray | None,
    push: tuple[float, float],
    sink: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """Deform every image around random shapes (1-4 per image), summing their fields."""
    check_images(images)
    check_rng(rng)
    if not 0.0 <= push[0] <= push[1]:
        raise AnodiffError(f"push must be a range (low, high) with 0 <= low <= high, got {push}")
    foreground = resolve_foreground(images, foreground)
    n, _, height, width = images.shape
    size = max(height, width)
    offsets = np.zeros((n, 2, height, width))
    stacks = sample_shape_masks(foreground, rng)
    for i, stack in enumerate(stacks):
        for mask in stack:
            centre = _pick_centre(mask, rng)
            distance = rng.uniform(*push) * size
            offsets[i] += radial_offsets(mask, centre, distance, sink=sink)
    masks = np.stack([stack.any(axis=0) for stack in stacks])
    return write_inside(images, warp(images, offsets), masks), masks


def sink_deformation(
    images: np.ndarray,
    *,
    rng: np.random.Generator,
    foreground: np.ndarray | None = None,
    push: tuple[float, float] = PUSH,
) -> tuple[np.ndarray, np.ndarray]:
    """Task 2: pull tissue toward a centre inside each anomaly shape.

    Returns (corrupted images, masks (N, H, W)). Speed for 32 x 1 x 64 x 64, median of 7
    calls (measured here, 2 cores, 2026-11-22): 50-105 ms.
    """
    return _radial_deformation(images, rng, foreground, push, sink=True)


def source_deformation(
    images: np.ndarray,
    *,
    rng: np.random.Generator,
    foreground: np.ndarray | None = None,
    push: tuple[float, float] = PUSH,
) -> tuple[np.ndarray, np.ndarray]:
    """Task 3: push tissue away from a centre inside each anomaly shape.

    Returns (corrupted images, masks (N, H, W)). Speed for 32 x 1 x 64 x 64, median of 7
    calls (measured here, 2 cores, 2026-11-22): 50-105 ms.
    """
    return _radial_deformation(images, rng, foreground, push, sink=False)
