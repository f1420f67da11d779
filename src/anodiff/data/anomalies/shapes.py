"""Where a synthetic anomaly goes: random sheared, rotated rectangles and ellipses.

Baugh 2024 ("Image-conditioned Diffusion Models for Medical Anomaly Detection") use
the tasks of Baugh 2023, which confine each anomaly to a random shape. The settings,
from the authors' public code (shared notes, "Baugh 2024"): a rectangle or an
ellipse with random shear and rotation; each side (0.03 + Gamma(2, 0.1)) x image size,
clipped to 6 %...80 % of the foreground's bounding box (rows against its height, columns
against its width); 1-4 anomalies per image; each overlaps the foreground by >= 50 %.
The shear range is not stated: we draw the shear factor uniformly from [-0.5, 0.5].

Placement is rejection sampling: the centre is a random foreground pixel (so the shape
always contains at least that pixel) and candidates are drawn, rasterised and tested in
vectorised rounds until one overlaps the foreground enough.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from anodiff.errors import AnodiffError

SIDE_OFFSET = 0.03  # side = (SIDE_OFFSET + Gamma(SIDE_GAMMA_SHAPE, SIDE_GAMMA_SCALE)) x size
SIDE_GAMMA_SHAPE = 2.0
SIDE_GAMMA_SCALE = 0.1
SIDE_CLIP = (0.06, 0.8)  # fractions of the foreground bounding box
MAX_SHEAR = 0.5
MIN_OVERLAP = 0.5  # fraction of the shape's pixels that must be foreground
ANOMALY_COUNT = (1, 4)  # anomalies per image, inclusive

_CANDIDATES = 8  # candidates rasterised together per round
_ROUNDS = 32  # rounds before giving up (256 candidates)


@dataclass(frozen=True)
class AnomalyShape:
    """One anomaly region, in pixel units.

    The shape is the axis-aligned rectangle or ellipse with ``sides`` (rows, columns)
    centred at the origin, sheared (each point's row coordinate gains ``shear`` x its
    column coordinate), rotated by ``rotation`` radians and moved to ``centre`` (row, col).
    """

    centre: tuple[float, float]
    sides: tuple[float, float]
    rotation: float
    shear: float
    ellipse: bool

    def rasterize(self, height: int, width: int) -> np.ndarray:
        """The pixels (H, W) whose centres lie inside the shape."""
        return _rasterize(
            np.array([self.centre], dtype=float),
            np.array([self.sides], dtype=float),
            np.array([self.rotation]),
            np.array([self.shear]),
            np.array([self.ellipse]),
            height,
            width,
        )[0]


def _rasterize(
    centres: np.ndarray,
    sides: np.ndarray,
    rotations: np.ndarray,
    shears: np.ndarray,
    ellipses: np.ndarray,
    height: int,
    width: int,
) -> np.ndarray:
    """Rasterise K shapes at once: (K, H, W) bool, by mapping pixels back to shape space."""
    rows = np.arange(height, dtype=float)[None, :, None] - centres[:, 0, None, None]
    cols = np.arange(width, dtype=float)[None, None, :] - centres[:, 1, None, None]
    cos = np.cos(rotations)[:, None, None]
    sin = np.sin(rotations)[:, None, None]
    along = cos * rows + sin * cols  # undo the rotation
    across = cos * cols - sin * rows
    u = (along - shears[:, None, None] * across) / (0.5 * sides[:, 0, None, None])
    v = across / (0.5 * sides[:, 1, None, None])
    inside_ellipse = u * u + v * v <= 1.0
    inside_rectangle = np.maximum(np.abs(u), np.abs(v)) <= 1.0
    return np.where(ellipses[:, None, None], inside_ellipse, inside_rectangle)


def side_limits(foreground: np.ndarray) -> np.ndarray:
    """The (min, max) side lengths (2, 2): rows then columns, from the foreground box."""
    rows = np.flatnonzero(foreground.any(axis=1))
    cols = np.flatnonzero(foreground.any(axis=0))
    extent = np.array([rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1], dtype=float)
    return np.stack([SIDE_CLIP[0] * extent, SIDE_CLIP[1] * extent])


def sample_shape(
    foreground: np.ndarray, rng: np.random.Generator
) -> tuple[AnomalyShape, np.ndarray]:
    """One random shape overlapping ``foreground`` (H, W) by >= 50 %, and its mask (H, W).

    ``foreground`` must be non-empty (callers validate). Raises
    :class:`~anodiff.errors.AnodiffError` if no candidate fits after 256 tries, which only
    happens for foregrounds made of scattered single pixels.
    """
    height, width = foreground.shape
    size = np.array([height, width], dtype=float)
    low, high = side_limits(foreground)
    fg_rows, fg_cols = np.nonzero(foreground)
    for _ in range(_ROUNDS):
        gamma = rng.gamma(SIDE_GAMMA_SHAPE, SIDE_GAMMA_SCALE, size=(_CANDIDATES, 2))
        sides = np.clip((SIDE_OFFSET + gamma) * size, low, high)
        rotations = rng.uniform(0.0, 2.0 * np.pi, _CANDIDATES)
        shears = rng.uniform(-MAX_SHEAR, MAX_SHEAR, _CANDIDATES)
        ellipses = rng.random(_CANDIDATES) < 0.5
        pick = rng.integers(fg_rows.size, size=_CANDIDATES)
        centres = np.stack([fg_rows[pick], fg_cols[pick]], axis=1).astype(float)
        masks = _rasterize(centres, sides, rotations, shears, ellipses, height, width)
        area = masks.sum(axis=(1, 2))
        overlap = (masks & foreground).sum(axis=(1, 2))
        fits = np.flatnonzero(overlap >= MIN_OVERLAP * area)
        if fits.size:
            k = fits[0]
            shape = AnomalyShape(
                centre=(float(centres[k, 0]), float(centres[k, 1])),
                sides=(float(sides[k, 0]), float(sides[k, 1])),
                rotation=float(rotations[k]),
                shear=float(shears[k]),
                ellipse=bool(ellipses[k]),
            )
            return shape, masks[k]
    raise AnodiffError(
        f"could not place an anomaly overlapping the foreground by >= {MIN_OVERLAP:.0%} in "
        f"{_ROUNDS * _CANDIDATES} tries; is the foreground mask sensible?"
    )


def sample_shape_masks(foreground: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
    """For each image of ``foreground`` (N, H, W), the masks (k, H, W) of its 1-4 shapes.

    Tasks that act per anomaly (a deformation centre, an intensity amplitude) use the
    separate masks; the task's output mask is their union.
    """
    stacks = []
    for image_foreground in foreground:
        count = rng.integers(ANOMALY_COUNT[0], ANOMALY_COUNT[1] + 1)
        stacks.append(np.stack([sample_shape(image_foreground, rng)[1] for _ in range(count)]))
    return stacks
