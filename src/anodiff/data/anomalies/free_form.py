"""FNDM's training corruption: random free-form masks, and corruption inside them.

FNDM (Li 2023, Sec. 3 "Implementation") trains on healthy images whose conditioning
copy is corrupted inside random lesion masks generated as in gated-convolution inpainting
(Yu 2019, "Free-Form Image Inpainting with Gated Convolution", Alg. 1): brush strokes
through random vertices, with random angles, lengths and brush widths. The settings follow
Yu et al.'s released generator (for 256^2 images), scaled to the image: 1-3 strokes of 4-11
vertices; turning angles alternate around 2 pi / 5 (each stroke draws its angle range
within +-2 pi / 15 of it); segment lengths N(d / 8, d / 16) clipped to [0, d / 4] with d
the image diagonal; brush width uniform in [12, 40] / 256 of the image size; vertices
clipped to the image; random horizontal and vertical flips. A stroke is the union of
capsules (a line of the brush width with round joints), rasterised here by the distance of
each pixel to each segment.

FNDM does not say what fills the masked region; :func:`corrupt_inside` offers uniform
noise (default), a Poisson blend from another image of the batch, or Baugh's fractal
intensity change.
"""

from __future__ import annotations

import numpy as np

from anodiff.data.anomalies._common import check_images, check_rng, write_inside
from anodiff.data.anomalies.blending import partner_indices
from anodiff.data.anomalies.intensity import add_fractal_intensity
from anodiff.data.anomalies.poisson import mixed_gradient_blend
from anodiff.errors import AnodiffError

STROKES = (1, 3)  # inclusive
VERTICES = (4, 11)  # inclusive
MEAN_ANGLE = 2.0 * np.pi / 5.0
ANGLE_RANGE = 2.0 * np.pi / 15.0
BRUSH_WIDTH = (12.0 / 256.0, 40.0 / 256.0)  # fraction of the image size
CORRUPTIONS = ("noise", "blend", "intensity")


def _segments(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """The segments of one mask's strokes: (S, 5) rows of (y0, x0, y1, x1, brush width)."""
    diagonal = np.hypot(height, width)
    size = max(height, width)
    segments = []
    for _ in range(rng.integers(STROKES[0], STROKES[1] + 1)):
        count = rng.integers(VERTICES[0], VERTICES[1] + 1)
        low = MEAN_ANGLE - rng.uniform(0.0, ANGLE_RANGE)
        high = MEAN_ANGLE + rng.uniform(0.0, ANGLE_RANGE)
        angles = rng.uniform(low, high, size=count)
        angles[::2] = 2.0 * np.pi - angles[::2]
        lengths = np.clip(rng.normal(diagonal / 8, diagonal / 16, size=count), 0, diagonal / 4)
        brush = rng.uniform(*BRUSH_WIDTH) * size
        y, x = rng.uniform(0, height - 1), rng.uniform(0, width - 1)
        for angle, length in zip(angles, lengths, strict=True):
            y1 = float(np.clip(y + length * np.sin(angle), 0, height - 1))
            x1 = float(np.clip(x + length * np.cos(angle), 0, width - 1))
            segments.append((y, x, y1, x1, brush))
            y, x = y1, x1
    return np.array(segments)


def _draw(segments: np.ndarray, height: int, width: int) -> np.ndarray:
    """Pixels (H, W) within half a brush width of any segment."""
    pixels = np.indices((height, width), dtype=float).reshape(2, -1).T[:, None, :]  # (P, 1, 2)
    start, end, radius = segments[:, 0:2], segments[:, 2:4], 0.5 * segments[:, 4]
    direction = end - start
    squared = np.maximum((direction**2).sum(axis=1), 1e-12)
    t = np.clip(((pixels - start) * direction).sum(axis=2) / squared, 0.0, 1.0)  # (P, S)
    nearest = start + t[..., None] * direction
    distance = np.sqrt(((pixels - nearest) ** 2).sum(axis=2))
    return (distance <= radius).any(axis=1).reshape(height, width)


def free_form_masks(n: int, height: int, width: int, *, rng: np.random.Generator) -> np.ndarray:
    """``n`` random free-form brush-stroke masks (n, H, W) bool (Yu 2019).

    On 64 x 64 they cover about 15 % of the image on average (measured over 500 masks).
    Speed for 32 masks at 64 x 64, median of 7 calls (measured here, 2 cores, 2026-11-22):
    85-95 ms (up to 0.17 s on a busy CPU). :func:`corrupt_inside` on 32 x 1 x 64 x 64:
    "noise" < 1 ms, "blend" 35-45 ms, "intensity" 30-70 ms (slower on a busy CPU, see
    :mod:`.intensity`).
    """
    check_rng(rng)
    if n < 1 or height < 2 or width < 2:
        raise AnodiffError(f"need n >= 1 and an image of at least 2 x 2, got {n}, {height}x{width}")
    masks = np.empty((n, height, width), dtype=bool)
    for i in range(n):
        mask = _draw(_segments(height, width, rng), height, width)
        flip_rows, flip_cols = rng.random(2) < 0.5
        masks[i] = mask[:: -1 if flip_rows else 1, :: -1 if flip_cols else 1]
    return masks


def corrupt_inside(
    images: np.ndarray,
    masks: np.ndarray,
    *,
    rng: np.random.Generator,
    mode: str = "noise",
) -> np.ndarray:
    """Replace ``images`` (N, C, H, W) inside ``masks`` (N, H, W) with something anomalous.

    ``mode`` is one of :data:`CORRUPTIONS`: "noise" (uniform values in [0, 1], drawn per
    pixel and channel), "blend" (mixed-gradient Poisson blend of the same place in another
    image of the batch; needs N >= 2) or "intensity" (Baugh's fractal intensity change,
    one region per image). Pixels outside the masks are returned unchanged.
    """
    check_images(images)
    check_rng(rng)
    n, _, height, width = images.shape
    if not isinstance(masks, np.ndarray) or masks.shape != (n, height, width):
        shape = getattr(masks, "shape", type(masks).__name__)
        raise AnodiffError(f"masks must be an array of shape {(n, height, width)}, got {shape}")
    masks = masks.astype(bool, copy=False)
    if mode == "noise":
        candidate = rng.random(images.shape)
    elif mode == "blend":
        if n < 2:
            raise AnodiffError("corrupt_inside(mode='blend') needs a batch of at least 2 images")
        partners = partner_indices(np.arange(n), n, rng)
        candidate = mixed_gradient_blend(images, images[partners], masks)
    elif mode == "intensity":
        candidate = add_fractal_intensity(images, [mask[None] for mask in masks], rng)
    else:
        raise AnodiffError(f"unknown mode {mode!r}; expected one of {', '.join(CORRUPTIONS)}")
    return write_inside(images, candidate, masks)
