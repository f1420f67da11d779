"""3-D volumes to 2-D axial slices and back, and several sequences stacked as channels.

Which voxel axis is axial is read from the affine, never assumed: nibabel's
``io_orientation`` assigns each voxel axis the world axis (R, A, S) it is most aligned with,
and the one aligned with S is sliced across. The two in-plane axes are put in the radiological
display orientation (rows run anterior -> posterior, columns patient-right -> patient-left)
by a transpose and flips, and slices are listed inferior -> superior. So a BraTS NIfTI
(LPS-like affine), an RAS NIfTI and a DICOM axial series all give the model the same view of
the head. Every step is an index permutation recorded in a :class:`SliceLayout`, which
:func:`slices_to_volume` inverts exactly.

Slice-range pruning (``keep``):

- :class:`ForegroundExtent` drops slices whose foreground area is below a fraction of the
  largest slice's (the brain's extent: empty and nearly empty end slices go).
- :class:`DropEnds` drops fixed counts at the inferior and superior ends, as Wolleb et al.
  (2022) do for BraTS: ``DropEnds(inferior=80, superior=26)`` keeps 49 of 155 slices.

Context slices (2.5-D input, ``context`` k > 0): each kept slice is given its k inferior and
k superior neighbours as extra channels, taken from the whole volume (so a slice at the edge
of the kept range still sees the pruned slice next to it) and repeated at the volume's ends
(:func:`context_offsets` fixes their order; :func:`context_names` names them).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

import numpy as np
from nibabel.orientations import io_orientation

from anodiff.data.normalise import foreground_mask
from anodiff.errors import AnodiffError


class KeepRule(Protocol):
    """Chooses slices from their foreground areas, listed inferior -> superior."""

    def select(self, areas: np.ndarray) -> np.ndarray:
        """A bool array over the slices: True for the ones kept."""
        ...


@dataclass(frozen=True)
class ForegroundExtent:
    """Keep slices whose foreground area is at least ``fraction`` of the largest one's."""

    fraction: float = 0.1

    def select(self, areas: np.ndarray) -> np.ndarray:
        """Slices with area >= fraction * max area (none when the volume is empty)."""
        top = areas.max(initial=0)
        return (areas >= self.fraction * top) & (areas > 0)


@dataclass(frozen=True)
class DropEnds:
    """Drop ``inferior`` slices at the bottom and ``superior`` slices at the top."""

    inferior: int = 0
    superior: int = 0

    def select(self, areas: np.ndarray) -> np.ndarray:
        """Slices between the dropped ends; an error when nothing would be left."""
        n = len(areas)
        if self.inferior < 0 or self.superior < 0 or self.inferior + self.superior >= n:
            raise AnodiffError(
                f"DropEnds(inferior={self.inferior}, superior={self.superior}) leaves no "
                f"slice of a volume with {n} axial slices"
            )
        keep = np.zeros(n, dtype=bool)
        keep[self.inferior : n - self.superior] = True
        return keep


@dataclass(frozen=True, eq=False)
class SliceLayout:
    """Where each 2-D slice sits in its volume: the inverse of :func:`volume_to_slices`.

    ``axis`` is the voxel axis sliced across (world S), ``rows``/``cols`` the voxel axes that
    became slice rows (world A) and columns (world R), ``flip_rows``/``flip_cols`` whether
    they were reversed, and ``indices`` the voxel indices along ``axis`` of the slices, in
    slice order.
    """

    volume_shape: tuple[int, int, int]
    axis: int
    rows: int
    cols: int
    flip_rows: bool
    flip_cols: bool
    indices: np.ndarray

    @property
    def plane_shape(self) -> tuple[int, int]:
        """The (H, W) shape of one slice."""
        return self.volume_shape[self.rows], self.volume_shape[self.cols]


def axial_axis(affine: np.ndarray) -> int:
    """The voxel axis most aligned with world S (superior)."""
    return int(np.flatnonzero(io_orientation(affine)[:, 0] == 2)[0])


def context_offsets(context: int) -> list[int]:
    """The slice offsets of the context channels, in channel order: -k .. -1, +1 .. +k
    (negative: inferior)."""
    if context < 0:
        raise AnodiffError(f"context must be >= 0 neighbouring slices, got {context}")
    return [*range(-context, 0), *range(1, context + 1)]


def context_names(sequences: Sequence[str], context: int) -> tuple[str, ...]:
    """Channel names of slices with ``context`` neighbours per side: the sequences, then
    each offset's sequences as ``<sequence>@<offset>`` (``flair@-1``: the FLAIR one slice
    below)."""
    return (*sequences, *(f"{name}@{offset:+d}" for offset in context_offsets(context)
                          for name in sequences))


def with_context(slices: np.ndarray, context: int) -> np.ndarray:
    """Slices (N, C, H, W) of one volume, inferior -> superior and consecutive, with their
    ``context`` neighbours per side appended as channels (N, C * (2k + 1), H, W); the end
    slices repeat. For slices already cut from a volume (the Python API's raw input);
    :func:`volume_to_slices` takes the neighbours from the whole volume instead."""
    if context == 0:
        return slices
    rows = np.arange(len(slices))
    return np.concatenate([slices, *(slices[np.clip(rows + offset, 0, len(slices) - 1)]
                                     for offset in context_offsets(context))], axis=1)


def volume_to_slices(
    volume: np.ndarray,
    affine: np.ndarray,
    keep: KeepRule | None = None,
    foreground: np.ndarray | None = None,
    context: int = 0,
) -> tuple[np.ndarray, SliceLayout]:
    """Axial slices of ``volume`` (X, Y, Z) or (C, X, Y, Z): (N, H, W) or (N, C, H, W).

    ``keep`` prunes the slice range using ``foreground`` (bool (X, Y, Z); by default voxels
    above the minimum in any channel). ``context`` > 0 appends each slice's neighbours as
    channels (module docstring; a (C, X, Y, Z) volume only): (N, C * (2k + 1), H, W).
    Returns the slices, inferior -> superior, and the :class:`SliceLayout` of the centre
    slices that puts per-slice maps back (:func:`slices_to_volume`).
    """
    shape = tuple(int(s) for s in volume.shape[-3:])
    ornt = io_orientation(affine)
    axis, rows, cols = (int(np.flatnonzero(ornt[:, 0] == w)[0]) for w in (2, 1, 0))
    order = np.arange(shape[axis]) if ornt[axis, 1] > 0 else np.arange(shape[axis])[::-1]
    whole = order
    if keep is not None:
        if foreground is None:
            channels = volume.reshape(-1, *shape)
            foreground = np.any([foreground_mask(c) for c in channels], axis=0)
        others = tuple(a for a in range(3) if a != axis)
        areas = np.asarray(foreground, dtype=bool).sum(axis=others)[order]
        order = order[keep.select(areas)]
    layout = SliceLayout(shape, axis, rows, cols, ornt[rows, 1] > 0, ornt[cols, 1] > 0, order)
    slices = take_slices(volume, layout)
    if context == 0:
        return slices, layout
    if volume.ndim != 4:
        raise AnodiffError("context slices need a (C, X, Y, Z) volume")
    rank = np.empty(len(whole), dtype=np.int64)
    rank[whole] = np.arange(len(whole))  # position of each voxel index, inferior -> superior
    neighbours = [take_slices(volume, replace(layout, indices=whole[np.clip(
        rank[order] + offset, 0, len(whole) - 1)])) for offset in context_offsets(context)]
    return np.concatenate([slices, *neighbours], axis=1), layout


def take_slices(volume: np.ndarray, layout: SliceLayout) -> np.ndarray:
    """The slices ``layout`` describes, from a volume on the same grid (e.g. a segmentation)."""
    lead = volume.ndim - 3
    moved = np.moveaxis(
        np.take(volume, layout.indices, axis=lead + layout.axis),
        (lead + layout.axis, lead + layout.rows, lead + layout.cols),
        (0, -2, -1),
    )
    if layout.flip_rows:
        moved = moved[..., ::-1, :]
    if layout.flip_cols:
        moved = moved[..., ::-1]
    return np.ascontiguousarray(moved)


def slices_to_volume(maps: np.ndarray, layout: SliceLayout, fill: float = 0.0) -> np.ndarray:
    """Per-slice maps (N, H, W) or (N, C, H, W) -> a volume on the original voxel grid.

    Slices pruned away (or absent from ``layout.indices``) are ``fill``.
    """
    maps = np.asarray(maps)
    if maps.shape[0] != len(layout.indices) or maps.shape[-2:] != layout.plane_shape:
        raise ValueError(
            f"maps of shape {maps.shape} do not fit {len(layout.indices)} slices of "
            f"{layout.plane_shape}"
        )
    if layout.flip_rows:
        maps = maps[..., ::-1, :]
    if layout.flip_cols:
        maps = maps[..., ::-1]
    lead = maps.ndim - 3
    moved = np.full((layout.volume_shape[layout.axis], *maps.shape[1:]), fill, dtype=maps.dtype)
    moved[layout.indices] = maps
    return np.ascontiguousarray(
        np.moveaxis(
            moved, (0, -2, -1), (lead + layout.axis, lead + layout.rows, lead + layout.cols)
        )
    )


def stack_sequences(
    volumes: Mapping[str, np.ndarray], order: Sequence[str] | None = None
) -> np.ndarray:
    """Stack co-registered sequences as channels: (C, X, Y, Z) in ``order`` (default sorted)."""
    names = list(order) if order is not None else sorted(volumes)
    missing = [name for name in names if name not in volumes]
    if missing or not names:
        raise AnodiffError(f"sequences {missing or names} not among {sorted(volumes)}")
    shapes = {name: tuple(volumes[name].shape) for name in names}
    if len(set(shapes.values())) > 1:
        raise AnodiffError(f"sequences differ in shape: {shapes}")
    return np.stack([np.asarray(volumes[name], dtype=np.float32) for name in names])
