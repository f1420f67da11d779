"""Per-volume intensity normalisation, foreground masks, and fitting slices to the model size.

Intensities. MR intensities are arbitrary units, so every volume (or 2-D image) is mapped to
[0, 1] on its own, with statistics taken over its foreground only (the background would
otherwise dominate every percentile):

- ``percentile``: clip to the [``low``, ``high``] percentiles of the foreground (default 1 and
  99) and map that range linearly to [0, 1] — the clip-and-rescale used for BraTS by Wolleb
  et al. (2022) and most slice-based anomaly work.
- ``max``: divide by the foreground maximum and clip to [0, 1] (Baugh 2024).
- ``brain``: z-score with the foreground mean and standard deviation, clip to [-``clip``,
  ``clip``] (default 3) and map that range to [0, 1]; the background is 0. Unlike a min-max
  rescale of the z-scores (which would undo the z-scoring), this keeps one scale across
  volumes: 0.5 is the mean tissue intensity everywhere.

The foreground defaults to :func:`foreground_mask`: voxels above the volume's minimum, the
convention of the UPD study (``input > input.min()``), which is the
brain in skull-stripped data. A volume without foreground (constant) normalises to zeros.

Size. :func:`fit_to_size` brings slices to the model's square (or H x W) size keeping their
aspect ratio: ``pad`` pads centrally with the slice's background value (its minimum; slices
larger than the size are centre-cropped), ``resize`` scales the longer side to the size
(skimage, linear with anti-aliasing for images, nearest for bool masks) and then pads.
:func:`unfit` inverts either on a map: exactly for ``pad`` (up to the cropped border, which
comes back as ``fill``), by resampling for ``resize``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage
from skimage.transform import resize

from anodiff.errors import AnodiffError

NORMALISATIONS = ("percentile", "max", "brain")
_DEFAULTS: dict[str, dict[str, float]] = {
    "percentile": {"low": 1.0, "high": 99.0},
    "max": {},
    "brain": {"clip": 3.0},
}
FIT_MODES = ("pad", "resize")


def foreground_mask(
    volume: np.ndarray, *, fill_holes: bool = False, largest_component: bool = False
) -> np.ndarray:
    """Voxels above the volume's minimum, optionally the largest component, holes filled.

    Largest-component selection drops isolated specks (noise above the background floor);
    hole filling adds back dark structures enclosed by tissue (ventricles, necrosis).
    """
    mask = volume > volume.min()
    if largest_component and mask.any():
        labels, n = ndimage.label(mask)
        sizes = ndimage.sum_labels(mask, labels, index=np.arange(1, n + 1))
        mask = labels == 1 + int(np.argmax(sizes))
    if fill_holes:
        mask = ndimage.binary_fill_holes(mask)
    return mask


def normalisation_settings(method: str, **params: float) -> dict[str, float]:
    """``method``'s parameters with ``params`` applied, checked (a boundary for configs)."""
    if method not in _DEFAULTS:
        raise AnodiffError(f"unknown normalisation '{method}'; choose from {NORMALISATIONS}")
    unknown = sorted(set(params) - set(_DEFAULTS[method]))
    if unknown:
        allowed = sorted(_DEFAULTS[method]) or "none"
        raise AnodiffError(f"normalisation '{method}' has no parameter {unknown} (has {allowed})")
    return {**_DEFAULTS[method], **params}


def normalise_intensity(
    volume: np.ndarray,
    method: str = "percentile",
    foreground: np.ndarray | None = None,
    **params: float,
) -> np.ndarray:
    """Map one volume or image to [0, 1] (float32) with ``method`` (see the module docstring).

    ``foreground`` (bool, same shape) selects the voxels the statistics come from; by default
    :func:`foreground_mask`. ``params`` override the method's defaults (``low``/``high`` for
    percentile, ``clip`` for brain).
    """
    settings = normalisation_settings(method, **params)
    volume = np.asarray(volume, dtype=np.float32)
    fg = foreground_mask(volume) if foreground is None else np.asarray(foreground, dtype=bool)
    if fg.shape != volume.shape:
        raise ValueError(f"foreground shape {fg.shape} differs from volume shape {volume.shape}")
    if not fg.any():
        return np.zeros_like(volume)
    values = volume[fg]
    if method == "percentile":
        lo, hi = np.percentile(values, [settings["low"], settings["high"]])
        out = (volume - lo) / (hi - lo) if hi > lo else (volume >= hi).astype(np.float32)
    elif method == "max":
        top = float(values.max())
        out = volume / top if top > 0 else np.zeros_like(volume)
    else:
        clip = settings["clip"]
        z = (volume - values.mean()) / (values.std() or 1.0)
        out = np.where(fg, (np.clip(z, -clip, clip) + clip) / (2.0 * clip), 0.0)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def fit_to_size(x: np.ndarray, size: int | tuple[int, int], mode: str = "pad") -> np.ndarray:
    """Bring the last two axes of ``x`` to ``size`` keeping the aspect ratio.

    ``x`` is a slice (H, W) or a batch (..., H, W); bool arrays are masks (nearest, padded
    with False), others images (linear, padded with each slice's minimum).
    """
    target = _size(size)
    scaled, offset = _plan(x.shape[-2:], target, mode)
    if scaled != x.shape[-2:]:
        x = _resize(x, scaled)
    if x.dtype == np.bool_:
        out = np.zeros((*x.shape[:-2], *target), dtype=bool)
    else:
        background = x.min(axis=(-2, -1), keepdims=True)
        out = np.broadcast_to(background, (*x.shape[:-2], *target)).astype(np.float32)
    _paste(x, out, offset)
    return out


def unfit(
    fitted: np.ndarray, original_shape: tuple[int, int], mode: str = "pad", fill: float = 0.0
) -> np.ndarray:
    """Take maps (..., h, w) made on :func:`fit_to_size`'s grid back to ``original_shape``.

    ``mode`` must be the one the slices were fitted with; bool maps are resampled nearest.
    """
    original = (int(original_shape[0]), int(original_shape[1]))
    scaled, offset = _plan(original, fitted.shape[-2:], mode)
    region = np.full((*fitted.shape[:-2], *scaled), fill, dtype=fitted.dtype)
    _paste(fitted, region, (-offset[0], -offset[1]))
    return region if scaled == original else _resize(region, original)


def scaled_shape(shape: tuple[int, ...], size: int | tuple[int, int], mode: str
                 ) -> tuple[int, int]:
    """The in-plane size a (H, W) slice takes on the model grid before padding: scaled to
    fit ``size`` (``resize``) or unchanged (``pad``, larger slices cropped, see
    :func:`fit_to_size`)."""
    return _plan(shape, _size(size), mode)[0]


def _size(size: int | tuple[int, int]) -> tuple[int, int]:
    h, w = (size, size) if isinstance(size, int) else size
    if h < 1 or w < 1:
        raise AnodiffError(f"size must be positive, got {size}")
    return int(h), int(w)


def _plan(
    shape: tuple[int, ...], target: tuple[int, ...], mode: str
) -> tuple[tuple[int, int], tuple[int, int]]:
    """The in-plane size after scaling, and the offset of its corner on the target grid."""
    if mode not in FIT_MODES:
        raise AnodiffError(f"unknown fit mode '{mode}'; choose from {FIT_MODES}")
    h, w = int(shape[0]), int(shape[1])
    th, tw = int(target[0]), int(target[1])
    if mode == "resize":
        scale = min(th / h, tw / w)
        h, w = min(th, max(1, round(h * scale))), min(tw, max(1, round(w * scale)))
    return (h, w), ((th - h) // 2, (tw - w) // 2)


def _paste(src: np.ndarray, dst: np.ndarray, offset: tuple[int, int]) -> None:
    """Copy ``src`` into ``dst`` with its corner at ``offset`` (may be negative), clipped."""
    spans = []
    for axis, start in enumerate(offset):
        n_src, n_dst = src.shape[axis - 2], dst.shape[axis - 2]
        lo, hi = max(start, 0), min(start + n_src, n_dst)
        spans.append((slice(lo, hi), slice(lo - start, hi - start)))
    dst[..., spans[0][0], spans[1][0]] = src[..., spans[0][1], spans[1][1]]


def _resize(x: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Resize the last two axes: nearest for bool masks, linear (anti-aliased) otherwise."""
    lead = x.shape[:-2]
    stack = np.moveaxis(x.reshape(-1, *x.shape[-2:]), 0, -1)  # (H, W, K): K slices
    kwargs: dict[str, Any] = {"preserve_range": True, "mode": "edge"}
    if x.dtype == np.bool_:
        out = resize(stack.astype(np.uint8), shape, order=0, anti_aliasing=False, **kwargs) > 0
    else:
        shrink = shape[0] < x.shape[-2] or shape[1] < x.shape[-1]
        out = resize(stack, shape, order=1, anti_aliasing=shrink, **kwargs).astype(np.float32)
    return np.moveaxis(out, -1, 0).reshape(*lead, *shape)
