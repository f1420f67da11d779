"""Smooth random fields: the one source of spatially coherent randomness in the benchmark.

Deformations, bias fields, ragged lesion borders and lesion texture all need noise that
varies slowly in space. A few Gaussian values on a coarse lattice, interpolated by a cubic
spline along each axis (one small matrix product per axis, so it costs next to nothing),
give such a field with the same character at every ``--size``.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy.interpolate import CubicSpline


@lru_cache(maxsize=64)
def _spline_matrix(length: int, nodes: int) -> np.ndarray:
    """(length, nodes) matrix mapping node values to a natural cubic spline on the axis."""
    positions = np.linspace(0.0, length - 1.0, nodes)
    return CubicSpline(positions, np.eye(nodes), bc_type="natural")(np.arange(length))


def smooth_field(
    rng: np.random.Generator, shape: tuple[int, int, int], nodes: int, sd: float = 1.0
) -> np.ndarray:
    """A zero-mean random 3-D field whose features span about ``1 / nodes`` of each axis.

    ``nodes`` (>= 2) control points per axis are drawn from N(0, sd^2) and interpolated, so
    the field passes through them and its standard deviation is close to ``sd``. float32.
    """
    field = rng.normal(0.0, sd, size=(nodes, nodes, nodes))
    for n in shape:  # interpolate the leading axis, then move it to the back
        field = np.moveaxis(np.tensordot(_spline_matrix(n, nodes), field, axes=(1, 0)), 0, -1)
    return field.astype(np.float32)
