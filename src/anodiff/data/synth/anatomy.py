"""Healthy anatomy: the MNI152 2009 template seen through a random subject-specific warp.

nilearn's wheel ships the 1 mm MNI152 2009 T1 (skull-stripped) and grey/white-matter
probability maps. :func:`load_reference` brings them once to a working resolution (block
means, which also anti-alias before the coarse resampling) and derives a brain mask, the
CSF map (brain minus GM minus WM) and a lateral-ventricle map.

:func:`healthy_anatomy` then samples them on a subject grid through a random warp, so no
two cases share an anatomy: a ventricle-size change (a smooth radial push around the
ventricles), a smooth non-linear displacement, an anisotropic scale, a rotation and a shift
(of which the shift along z is the slice-position variation). The warp is stored as the
reference coordinates of every voxel, so a later stage (a tumour's mass effect) can compose
another displacement with it and resample the template once, without blurring twice.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache

import numpy as np
from scipy import ndimage as ndi

from anodiff.data.synth.fields import smooth_field
from anodiff.extras import require

FOV_MM = 200.0
"""In-plane field of view: ``size`` voxels span it (3.125 mm voxels at ``--size 64``)."""
SLICES_PER_PIXEL = 0.75
"""Axial slices per in-plane pixel: 48 slices (150 mm, isotropic voxels) at ``--size 64``."""
BRAIN_CENTRE_MM = np.array([0.0, -17.0, 5.0])
"""Centre of the template brain's bounding box (MNI mm); grids and rotations centre here."""
MAPS = ("t1", "gm", "wm", "brain", "ventricles")
"""The reference maps every anatomy samples."""


@dataclass(frozen=True)
class Grid:
    """The voxel grid of every case at one ``--size``: isotropic voxels, axial slices last."""

    size: int

    @property
    def spacing(self) -> float:
        """Voxel edge in mm."""
        return FOV_MM / self.size

    @property
    def shape(self) -> tuple[int, int, int]:
        """(x, y, z) = (size, size, slices); ``array[:, :, k]`` is an axial slice."""
        return self.size, self.size, round(SLICES_PER_PIXEL * self.size)


@dataclass(frozen=True, eq=False)
class Reference:
    """The template maps at working resolution: voxel ``i`` lies at ``origin + spacing * i``."""

    maps: dict[str, np.ndarray]
    origin: np.ndarray
    spacing: float
    t1_means: dict[str, float]
    ventricle_centre: np.ndarray


@dataclass(frozen=True, eq=False)
class Anatomy:
    """One subject's healthy tissue maps on a :class:`Grid` (float32 arrays, fractions 0-1).

    ``coords`` (3, X, Y, Z) holds, for every voxel, the reference voxel coordinates it
    samples; ``origin`` is the subject-space position (mm) of voxel (0, 0, 0).
    """

    grid: Grid
    origin: np.ndarray
    coords: np.ndarray
    t1: np.ndarray
    gm: np.ndarray
    wm: np.ndarray
    brain: np.ndarray
    ventricles: np.ndarray
    reference: Reference

    @property
    def csf(self) -> np.ndarray:
        """CSF fraction: what is brain but neither grey nor white matter."""
        return np.clip(self.brain - self.gm - self.wm, 0.0, 1.0)

    @property
    def foreground(self) -> np.ndarray:
        """Voxels inside the (skull-stripped) brain; everything else is written as 0."""
        return self.brain >= 0.5

    @property
    def affine(self) -> np.ndarray:
        """Voxel-to-mm affine (RAS, isotropic), as written into the NIfTI header."""
        affine = np.eye(4)
        affine[:3, :3] *= self.grid.spacing
        affine[:3, 3] = self.origin
        return affine

    def template_mm(self) -> np.ndarray:
        """(3, X, Y, Z) MNI position each voxel shows: x < 0 is the left hemisphere."""
        ref = self.reference
        return ref.origin[:, None, None, None] + ref.spacing * self.coords

    def warped(self, displacement: np.ndarray) -> Anatomy:
        """The anatomy with tissue moved by ``displacement`` (3, X, Y, Z, in voxels).

        The voxel at p shows what was at p - u(p); the warp is composed with the subject
        warp and the template is resampled once.
        """
        source = np.indices(self.grid.shape, dtype=np.float32) - displacement
        coords = np.stack([ndi.map_coordinates(c, source, order=1, mode="nearest")
                           for c in self.coords])
        return replace(self, coords=coords, **_sample(self.reference, coords))


def reference_factor(grid: Grid) -> int:
    """Block size (1 mm voxels) of the working reference: about half the grid spacing."""
    return max(1, int(grid.spacing // 1.5))


@lru_cache(maxsize=2)
def load_reference(factor: int) -> Reference:
    """The MNI152 2009 maps as ``factor``-mm block means, cropped to the brain (cached)."""
    t1, gm, wm, affine = _load_template()
    brain = ndi.binary_fill_holes(t1 > 0.2)
    csf = np.clip(brain - gm - wm, 0.0, 1.0)
    t1_means = {name: float(t1[p > 0.9].mean()) for name, p in
                (("csf", csf), ("gm", gm), ("wm", wm))}
    ventricles = _ventricles(csf, brain, affine)
    lo = np.argwhere(brain).min(axis=0) - 2 * factor
    hi = np.argwhere(brain).max(axis=0) + 2 * factor + 1
    crop = tuple(slice(max(a, 0), b) for a, b in zip(lo, hi, strict=True))
    maps = {name: _block_mean(np.asarray(a[crop], dtype=np.float32), factor)
            for name, a in zip(MAPS, (t1, gm, wm, brain, ventricles), strict=True)}
    start = np.array([s.start for s in crop], dtype=float)
    origin = affine[:3, 3] + start + (factor - 1) / 2.0
    centre = (np.argwhere(ventricles).mean(axis=0) + affine[:3, 3])
    return Reference(maps=maps, origin=origin, spacing=float(factor), t1_means=t1_means,
                     ventricle_centre=centre)


def healthy_anatomy(grid: Grid, rng: np.random.Generator) -> Anatomy:
    """A random healthy subject on ``grid``; every random draw comes from ``rng``.

    Variation (uniform ranges): slice position +-12 mm along z, rotation +-4 deg (pitch,
    roll) and +-8 deg (yaw), scale +-6 % per axis, shift +-4 mm, a smooth displacement of
    2.5 mm s.d., and ventricles shrunk or widened by a radial push of -25 % to +40 %.
    """
    ref = load_reference(reference_factor(grid))
    z_shift = rng.uniform(-12.0, 12.0)
    angles = np.radians(rng.uniform(-1.0, 1.0, 3) * np.array([4.0, 4.0, 8.0]))
    scale = 1.0 + rng.uniform(-0.06, 0.06, 3)
    shift = rng.uniform(-4.0, 4.0, 3)
    displacement = np.stack([smooth_field(rng, grid.shape, nodes=5, sd=2.5) for _ in range(3)])
    ventricle_push = rng.uniform(-0.25, 0.4)

    shape = np.array(grid.shape)
    origin = BRAIN_CENTRE_MM + [0.0, 0.0, z_shift] - grid.spacing * (shape - 1) / 2.0
    points = origin[:, None, None, None] + grid.spacing * np.indices(grid.shape)
    matrix = rotation_matrix(angles) * scale
    rel = np.einsum("ij,j...->i...", matrix, points - BRAIN_CENTRE_MM[:, None, None, None])
    mni = BRAIN_CENTRE_MM[:, None, None, None] + shift[:, None, None, None] + rel + displacement
    mni = _radial_push(mni, ref.ventricle_centre, np.array([18.0, 35.0, 18.0]), ventricle_push)
    coords = ((mni - ref.origin[:, None, None, None]) / ref.spacing).astype(np.float32)
    return Anatomy(grid=grid, origin=origin, coords=coords, reference=ref,
                   **_sample(ref, coords))


def rotation_matrix(angles: np.ndarray) -> np.ndarray:
    """Rotation matrix from angles (radians) about x, y and z, applied in that order."""
    cx, cy, cz = np.cos(angles)
    sx, sy, sz = np.sin(angles)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def _sample(ref: Reference, coords: np.ndarray) -> dict[str, np.ndarray]:
    """Trilinear samples of every reference map at ``coords`` (0 outside the template)."""
    return {name: ndi.map_coordinates(ref.maps[name], coords, order=1, mode="constant",
                                      cval=0.0, prefilter=False) for name in MAPS}


def _radial_push(
    points: np.ndarray, centre: np.ndarray, radii: np.ndarray, amount: float
) -> np.ndarray:
    """Pull sampling points towards ``centre`` by ``amount`` within a Gaussian envelope.

    Sampling closer to the centre magnifies what lies there (amount > 0 widens the
    ventricles, < 0 narrows them); the map stays one-to-one for -2 < amount < 1.
    """
    rel = points - centre[:, None, None, None]
    envelope = np.exp(-0.5 * np.sum((rel / radii[:, None, None, None]) ** 2, axis=0))
    return points - amount * rel * envelope


def _block_mean(volume: np.ndarray, factor: int) -> np.ndarray:
    """Mean over ``factor``^3 blocks (zero-padded at the high end), float32."""
    if factor == 1:
        return volume
    pad = [(0, -n % factor) for n in volume.shape]
    v = np.pad(volume, pad)
    x, y, z = (n // factor for n in v.shape)
    return v.reshape(x, factor, y, factor, z, factor).mean(axis=(1, 3, 5), dtype=np.float32)


def _ventricles(csf: np.ndarray, brain: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Lateral ventricles: the two largest deep CSF components in a central box (MNI mm).

    Deep means more than 12 mm from the brain's outer surface, which excludes the
    interhemispheric fissure and sulci that also fall inside the box.
    """
    box_mm = np.array([[-45.0, -65.0, -20.0], [45.0, 50.0, 50.0]])
    lo, hi = (np.round(b - affine[:3, 3]).astype(int) for b in box_mm)
    crop = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    depth = ndi.distance_transform_edt(brain[crop])
    mm = np.indices(depth.shape) + (lo + affine[:3, 3])[:, None, None, None]
    central = (np.abs(mm[0]) < 30) & (mm[1] > -50) & (mm[1] < 35) & (mm[2] > -5) & (mm[2] < 35)
    candidates = (csf[crop] > 0.5) & central & (depth > 12)
    labels, n = ndi.label(candidates)
    sizes = ndi.sum(candidates, labels, range(1, n + 1))
    keep = 1 + np.argsort(sizes)[-2:]
    out = np.zeros(brain.shape, dtype=bool)
    out[crop] = np.isin(labels, keep)
    return out


def _load_template() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """T1, GM and WM maps (1 mm, float32) and their affine, from nilearn's wheel (offline).

    nilearn is imported here, not at module level: it takes over a second to import, only
    the benchmark builder needs it, and it is optional (``anodiff[synth]``).
    """
    datasets = require("nilearn.datasets", "synth",
                       "the embedded benchmark (built from nilearn's MNI152 template)")

    t1 = datasets.load_mni152_template(resolution=1)
    gm = datasets.load_mni152_gm_template(resolution=1)
    wm = datasets.load_mni152_wm_template(resolution=1)
    if not np.allclose(np.diag(t1.affine)[:3], 1.0):
        raise RuntimeError("nilearn's MNI152 template is no longer 1 mm RAS; update anatomy.py")
    arrays = [np.asarray(img.get_fdata(dtype=np.float32)) for img in (t1, gm, wm)]
    return arrays[0], arrays[1], arrays[2], t1.affine
