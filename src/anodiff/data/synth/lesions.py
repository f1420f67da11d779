"""Lesions with exact masks, one generator per benchmark track.

Each generator takes a healthy :class:`~anodiff.data.synth.anatomy.Anatomy` and a random
generator and returns a :class:`Lesion`: the anatomy as the lesion leaves it (moved by a
tumour's mass effect, untouched otherwise) and lesion compartments (voxel fractions plus
an :class:`~anodiff.data.synth.contrasts.Appearance` per sequence). Lesion insertion is the
last stage before acquisition and draws only from its own random stream, so the same case
can be rendered with and without its lesion.

Compartment borders are partial-volume ramps one voxel wide; the mask is "lesion fraction
>= 0.5", and partial voxels outside it are kept only on its in-plane one-voxel rim (so a
slice without mask voxels is untouched). Lesion tissue replaces healthy tissue only where
that tissue can be affected (an infarct does not replace CSF, white-matter lesions live in
white matter).

Tracks:
- ``tumour``: necrotic core (label 1, absent in a quarter of tumours), enhancing rim
  (label 3) and oedema (label 2, following white matter), with mass effect: surrounding
  tissue is pushed outward (up to 60 % of the core radius at its border, decaying with
  distance, damped to zero at the brain surface). The mask holds the three compartments
  only: displaced tissue is normal tissue, as in BraTS.
- ``stroke``: a wedge in one arterial territory (MCA 60 %, ACA 20 %, PCA 20 %) from a
  deep apex out to the cortex, in grey and white matter: T1-hypo, T2- and FLAIR-hyper.
- ``wml``: 3-12 small ellipsoids in periventricular white matter (within 12 mm of the
  ventricles): T1 slightly hypo, T2- and FLAIR-hyper.
- ``lowcontrast``: 1-3 ragged blobs in cerebral grey/white matter whose T1 differs from
  the local tissue by only 3-8 % (up or down) while T2 and FLAIR show them.
- ``structural``: a change of shape without a tissue of its own (review Sec. 6.1), one of
  three kinds: one lateral ventricle enlarged, focal cortical atrophy, or a space-occupying
  deformation. Every voxel shows normal tissue; the mask holds the voxels where at least a
  quarter of the tissue differs from the healthy anatomy (:data:`CHANGED_TISSUE`).
- ``shift``: the tumour generator; what differs is the test cases' scanner (see
  :mod:`anodiff.data.synth.acquisition`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
from scipy import ndimage as ndi

from anodiff.data.synth.anatomy import Anatomy, rotation_matrix
from anodiff.data.synth.contrasts import Appearance, Compartment, Mix, Relative
from anodiff.data.synth.fields import smooth_field

MIN_LESION_VOXELS = 3
"""A drawn lesion smaller than this (mask voxels) is redrawn."""
CHANGED_TISSUE = 0.5
"""A structural change's mask: sum over CSF, GM and WM of |fraction change| >= this, i.e.
at least a quarter of the voxel's tissue is of another kind than in the healthy anatomy."""
RIM = np.ones((3, 3, 1), dtype=bool)
"""Where partial lesion voxels may lie around the mask: its in-plane 8-neighbourhood."""


@dataclass(frozen=True, eq=False)
class Lesion:
    """A lesion and the (possibly displaced) healthy anatomy it sits in.

    A structural change has no compartments: ``changed`` is its mask and ``before`` the
    anatomy it altered, which the case's twin shows. Otherwise the twin shows ``anatomy``
    (a tumour's mass effect is displaced normal tissue, outside the mask as in BraTS).
    """

    anatomy: Anatomy
    compartments: tuple[Compartment, ...]
    changed: np.ndarray | None = None
    before: Anatomy | None = None

    @property
    def reference(self) -> Anatomy:
        """The anatomy the case's twin shows: what the case looks like without the lesion."""
        return self.before if self.before is not None else self.anatomy

    def seg(self) -> np.ndarray:
        """uint8 mask: 0 normal, else the label of the largest compartment in the voxel."""
        if self.changed is not None:
            return self.changed.astype(np.uint8)
        fractions = np.stack([c.fraction for c in self.compartments])
        labels = np.array([c.label for c in self.compartments], dtype=np.uint8)
        inside = (fractions.sum(axis=0) >= 0.5) & self.anatomy.foreground
        return np.where(inside, labels[fractions.argmax(axis=0)], 0).astype(np.uint8)


def insert_lesion(track: str, anatomy: Anatomy, rng: np.random.Generator) -> Lesion:
    """Draw a lesion of ``track`` into ``anatomy``, redrawing the rare near-empty one."""
    for _ in range(50):
        lesion = TRACKS[track](anatomy, rng)
        if np.count_nonzero(lesion.seg()) >= MIN_LESION_VOXELS:
            return lesion
    raise RuntimeError(f"could not place a {track} lesion of {MIN_LESION_VOXELS}+ voxels")


def tumour(anatomy: Anatomy, rng: np.random.Generator) -> Lesion:
    """Glioma-like tumour: necrosis, enhancing rim, oedema and mass effect."""
    spacing = anatomy.grid.spacing
    radius = max(rng.uniform(10.0, 22.0), 1.5 * spacing)
    oedema_extent = rng.uniform(1.2, 1.7)
    necrosis = rng.uniform(0.55, 0.85) if rng.random() < 0.75 else 0.0
    push = rng.uniform(0.3, 0.6)
    depth = _depth_mm(anatomy)
    allowed = (_cerebrum(anatomy) & (depth > radius + 5.0) & (anatomy.ventricles < 0.1)
               & (anatomy.gm + anatomy.wm > 0.5))
    centre = _pick(anatomy, allowed, rng)
    radii = radius * rng.uniform(0.8, 1.2, 3)
    rotation = _random_rotation(rng)
    core_shape = 0.12 * smooth_field(rng, anatomy.grid.shape, nodes=10)
    oedema_shape = 0.25 * smooth_field(rng, anatomy.grid.shape, nodes=12)

    moved = anatomy.warped(_mass_effect(anatomy, centre, radius, push, depth))
    rho = _ellipsoid_radius(moved, centre, radii, rotation)
    mean_radius = float(np.mean(radii))
    inside = moved.foreground
    core = _inside(rho * (1 + core_shape), 1.0, mean_radius, spacing) * inside
    dead = (_inside(rho * (1 + core_shape), necrosis, mean_radius, spacing) * inside
            if necrosis else np.zeros_like(core))
    swollen = _inside(rho * (1 + oedema_shape), oedema_extent, mean_radius, spacing) * inside
    oedema = np.clip(swollen - core, 0.0, 1.0) * _tissue_weight(moved, gm=0.4, wm=1.0)
    looks = {
        1: {"t1": Mix({"csf": 0.7, "gm": 0.3}), "t2": Mix({"csf": 0.85, "gm": 0.15}),
            "flair": Mix({"csf": 0.5, "gm": 0.6})},
        2: {"t1": Mix({"gm": 0.85}), "t2": Mix({"csf": 0.5, "gm": 0.6}),
            "flair": Mix({"gm": 1.35})},
        3: {"t1": Mix({"gm": 0.9}), "t2": Mix({"gm": 1.2}), "flair": Mix({"gm": 1.25})},
    }
    parts = [(label, f, looks[label]) for label, f in ((1, dead), (2, oedema), (3, core - dead))
             if f.any()]
    return _lesion(moved, parts, rng)


def stroke(anatomy: Anatomy, rng: np.random.Generator) -> Lesion:
    """Ischaemic infarct: a cortex-reaching wedge of one arterial territory."""
    spacing = anatomy.grid.spacing
    territory = rng.choice(3, p=[0.6, 0.2, 0.2])
    side = rng.choice([-1.0, 1.0])
    apex_mni, axis = {
        0: ((18.0 * side, -5.0, 5.0), (side, 0.0, 0.25)),     # middle cerebral artery
        1: ((6.0 * side, 15.0, 5.0), (0.15 * side, 0.45, 1.0)),  # anterior cerebral artery
        2: ((15.0 * side, -30.0, 0.0), (0.2 * side, -1.0, 0.1)),  # posterior cerebral artery
    }[int(territory)]
    axis = rotation_matrix(np.radians(rng.uniform(-1, 1, 3) * np.array([20.0, 20.0, 35.0]))) @ axis
    axis = axis / np.linalg.norm(axis)
    half_angle = np.radians(rng.uniform(12.0, 28.0))
    start = rng.uniform(5.0, 35.0)
    shape = anatomy.grid.shape
    edge = (1.0 + 0.25 * smooth_field(rng, shape, nodes=8)
            + 0.15 * smooth_field(rng, shape, nodes=16))

    mni = anatomy.template_mm()
    apex = _subject_point(anatomy, np.array(apex_mni), mni)
    rel = _points(anatomy) - apex[:, None, None, None]
    dist = np.linalg.norm(rel, axis=0) + 1e-6
    angle = np.arccos(np.clip(np.einsum("i,i...->...", axis, rel) / dist, -1.0, 1.0))
    wedge = np.clip(0.5 - (angle - half_angle * edge) * dist / spacing, 0.0, 1.0)
    beyond = np.clip(0.5 + (dist - start * edge) / spacing, 0.0, 1.0)
    hemisphere = np.clip(0.5 + side * mni[0] / spacing, 0.0, 1.0)
    fraction = (wedge * beyond * hemisphere * _tissue_weight(anatomy, gm=1.0, wm=1.0)
                * anatomy.foreground)
    look = {"t1": Mix({"csf": 0.5, "gm": 0.5}), "t2": Mix({"csf": 0.55, "gm": 0.6}),
            "flair": Mix({"gm": 1.4})}
    return _lesion(anatomy, [(1, fraction, look)], rng)


def wml(anatomy: Anatomy, rng: np.random.Generator) -> Lesion:
    """Small periventricular white-matter lesions (several ellipsoids)."""
    spacing = anatomy.grid.spacing
    count = int(rng.integers(3, 13))
    near = ndi.distance_transform_edt(anatomy.ventricles < 0.5) * spacing
    allowed = (anatomy.wm > 0.6) & (near <= 12.0) & anatomy.foreground
    fraction = np.zeros(anatomy.grid.shape, dtype=np.float32)
    for _ in range(count):
        centre = _pick(anatomy, allowed, rng)
        radii = max(rng.uniform(3.0, 7.0), 0.75 * spacing) * np.array([1.0, 1.0, 1.5])
        rho = _ellipsoid_radius(anatomy, centre, radii, _random_rotation(rng))
        fraction = np.maximum(fraction, _inside(rho, 1.0, float(np.mean(radii)), spacing))
    fraction *= _tissue_weight(anatomy, gm=0.3, wm=1.0) * anatomy.foreground
    look = {"t1": Mix({"gm": 0.5, "wm": 0.5}), "t2": Mix({"gm": 1.3}), "flair": Mix({"gm": 1.4})}
    return _lesion(anatomy, [(1, fraction, look)], rng)


def lowcontrast(anatomy: Anatomy, rng: np.random.Generator) -> Lesion:
    """Ragged blobs that are nearly iso-intense in T1 but visible in T2 and FLAIR."""
    spacing = anatomy.grid.spacing
    count = int(rng.integers(1, 4))
    delta = rng.uniform(0.03, 0.08) * rng.choice([-1.0, 1.0])
    depth = _depth_mm(anatomy)
    cerebrum = _cerebrum(anatomy)
    fraction = np.zeros(anatomy.grid.shape, dtype=np.float32)
    for _ in range(count):
        radius = max(rng.uniform(8.0, 18.0), spacing)
        allowed = cerebrum & (depth > radius) & (anatomy.gm + anatomy.wm > 0.6)
        centre = _pick(anatomy, allowed, rng)
        radii = radius * rng.uniform(0.75, 1.25, 3)
        rho = _ellipsoid_radius(anatomy, centre, radii, _random_rotation(rng))
        rho = rho * (1.0 + 0.2 * smooth_field(rng, anatomy.grid.shape, nodes=12))
        fraction = np.maximum(fraction, _inside(rho, 1.0, float(np.mean(radii)), spacing))
    fraction *= _tissue_weight(anatomy, gm=1.0, wm=1.0) * anatomy.foreground
    look = {"t1": Relative(delta), "t2": Mix({"gm": 1.2}), "flair": Mix({"gm": 1.3})}
    return _lesion(anatomy, [(1, fraction, look)], rng)


def structural(anatomy: Anatomy, rng: np.random.Generator) -> Lesion:
    """A change of shape only: an enlarged ventricle, focal atrophy or a space-occupying
    deformation (a third each), masked where the tissue changed (:data:`CHANGED_TISSUE`)."""
    kind = int(rng.integers(3))
    after = (_enlarged_ventricle, _focal_atrophy, _space_occupation)[kind](anatomy, rng)
    change = sum(np.abs(getattr(after, t) - getattr(anatomy, t)) for t in ("csf", "gm", "wm"))
    changed = (change >= CHANGED_TISSUE) & anatomy.foreground & after.foreground
    return Lesion(after, (), changed=changed, before=anatomy)


def _enlarged_ventricle(anatomy: Anatomy, rng: np.random.Generator) -> Anatomy:
    """One lateral ventricle widened by 3-6 mm into the tissue of its hemisphere (an
    entrapped ventricle, or dilation ex vacuo), the other left as it is; healthy cases vary
    both ventricles together (a radial push of -25 to +40 %). The border is ragged
    (+-25 %) and stays 8 mm inside the brain surface."""
    spacing = anatomy.grid.spacing
    width = rng.uniform(3.0, 6.0)
    side = rng.choice([-1.0, 1.0])
    edge = 1.0 + 0.25 * smooth_field(rng, anatomy.grid.shape, nodes=10)
    hemisphere = np.sign(anatomy.template_mm()[0]) == side
    inside = anatomy.ventricles >= 0.5
    own = inside & hemisphere if (inside & hemisphere).any() else inside
    distance = ndi.distance_transform_edt(~own) * spacing if own.any() else np.inf
    grown = np.clip(0.5 + (width * edge - distance) / spacing, 0.0, 1.0)
    grown *= (_depth_mm(anatomy) > 8.0) * hemisphere * (1.0 - own)
    return _tissue_to_csf(anatomy, grown * anatomy.gm, grown * anatomy.wm)


def _focal_atrophy(anatomy: Anatomy, rng: np.random.Generator) -> Anatomy:
    """Cortical tissue loss in a Gaussian region (s.d. 8-14 mm): 50-80 % of the grey and a
    third as much of the white matter become CSF (widened sulci, thinned gyri)."""
    spacing = anatomy.grid.spacing
    depth = _depth_mm(anatomy)
    allowed = _cerebrum(anatomy) & (depth > 3.0) & (depth < 12.0) & (anatomy.gm > 0.5)
    centre = _pick(anatomy, allowed, rng)
    width = rng.uniform(8.0, 14.0)
    amount = rng.uniform(0.5, 0.8)
    distance = np.linalg.norm(_points(anatomy) - centre[:, None, None, None], axis=0)
    loss = amount * np.exp(-0.5 * (distance / width) ** 2)
    loss = np.where(distance < 3 * width + spacing, loss, 0.0).astype(np.float32)
    return _tissue_to_csf(anatomy, loss * anatomy.gm, loss / 3.0 * anatomy.wm)


def _tissue_to_csf(anatomy: Anatomy, lost_gm: np.ndarray, lost_wm: np.ndarray) -> Anatomy:
    """The anatomy with the given grey- and white-matter fractions turned into CSF; T1
    follows the tissue mixture (the template's tissue means)."""
    means = anatomy.reference.t1_means
    t1 = (anatomy.t1 + lost_gm * (means["csf"] - means["gm"])
          + lost_wm * (means["csf"] - means["wm"]))
    return replace(anatomy, gm=(anatomy.gm - lost_gm).astype(np.float32),
                   wm=(anatomy.wm - lost_wm).astype(np.float32), t1=t1.astype(np.float32))


def _space_occupation(anatomy: Anatomy, rng: np.random.Generator) -> Anatomy:
    """A tumour's mass effect without its tumour (push 40-60 % of a 10-18 mm radius): tissue
    pushed aside and stretched around a space-occupying process that looks like the tissue
    it displaces (an iso-intense mass)."""
    radius = max(rng.uniform(10.0, 18.0), 1.5 * anatomy.grid.spacing)
    push = rng.uniform(0.4, 0.6)
    depth = _depth_mm(anatomy)
    allowed = (_cerebrum(anatomy) & (depth > radius + 5.0) & (anatomy.gm + anatomy.wm > 0.5))
    centre = _pick(anatomy, allowed, rng)
    return anatomy.warped(_mass_effect(anatomy, centre, radius, push, depth))


TRACKS: dict[str, Callable[[Anatomy, np.random.Generator], Lesion]] = {
    "tumour": tumour,
    "stroke": stroke,
    "wml": wml,
    "lowcontrast": lowcontrast,
    "structural": structural,
    "shift": tumour,
}
"""Track name -> lesion generator; the order fixes each track's random stream."""


def _lesion(
    anatomy: Anatomy,
    parts: list[tuple[int, np.ndarray, dict[str, Appearance]]],
    rng: np.random.Generator,
) -> Lesion:
    """Compartments from (label, fraction, look), trimmed to the mask's in-plane rim.

    Partial fractions are kept only in the mask and within one voxel of it in the same
    axial slice (8-neighbourhood), so every voxel the lesion changes is in the mask or on
    its rim, and an axial slice without mask voxels is exactly as it was without the
    lesion. Each look is jittered by +-12 % per sequence, and each compartment gets a 5 %
    multiplicative texture.
    """
    total = sum(fraction for _, fraction, _ in parts)
    rim = ndi.binary_dilation((total >= 0.5) & anatomy.foreground, RIM)
    compartments = []
    for label, fraction, look in parts:
        jittered = {}
        for seq, appearance in look.items():
            gain = rng.uniform(0.88, 1.12)
            jittered[seq] = (Mix({t: w * gain for t, w in appearance.weights.items()})
                             if isinstance(appearance, Mix) else appearance)
        texture = 1.0 + 0.05 * smooth_field(rng, anatomy.grid.shape, nodes=16)
        compartments.append(Compartment(label, (fraction * rim).astype(np.float32), jittered,
                                        texture))
    return Lesion(anatomy, tuple(compartments))


def _mass_effect(
    anatomy: Anatomy, centre: np.ndarray, radius: float, push: float, depth: np.ndarray
) -> np.ndarray:
    """Radial displacement (voxels) pushing tissue away from ``centre``.

    Inside the core the shift grows linearly to ``push * radius`` at its border and decays
    outside with length ``radius / 2 + 10`` mm; it is damped to zero within 8 mm of the
    brain surface so the outline stays. Source positions move monotonically outward with
    distance, so the warp folds nowhere.
    """
    rel = _points(anatomy) - centre[:, None, None, None]
    dist = np.linalg.norm(rel, axis=0) + 1e-6
    peak = push * radius
    shift = np.where(dist < radius, peak * dist / radius,
                     peak * np.exp(-(dist - radius) / (radius / 2 + 10.0)))
    shift *= np.clip(depth / 8.0, 0.0, 1.0)
    return (rel / dist * shift / anatomy.grid.spacing).astype(np.float32)


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A rotation by random angles about all three axes (orientation of an ellipsoid)."""
    return rotation_matrix(rng.uniform(-np.pi, np.pi, 3))


def _points(anatomy: Anatomy) -> np.ndarray:
    """(3, X, Y, Z) subject-space mm of every voxel."""
    grid = anatomy.grid
    return (anatomy.origin[:, None, None, None]
            + grid.spacing * np.indices(grid.shape, dtype=np.float32))


def _cerebrum(anatomy: Anatomy) -> np.ndarray:
    """Voxels of the cerebral hemispheres: above the tentorium, or in a temporal lobe.

    In MNI mm: z > -10, or lateral (|x| > 28), not posterior (y > -45) and z > -45; this
    keeps cerebellum and brain stem out of tumour and low-contrast lesion centres.
    """
    x, y, z = anatomy.template_mm()
    return (z > -10.0) | ((np.abs(x) > 28.0) & (y > -45.0) & (z > -45.0))


def _depth_mm(anatomy: Anatomy) -> np.ndarray:
    """Distance (mm) of every voxel to the outside of the brain."""
    return ndi.distance_transform_edt(anatomy.foreground) * anatomy.grid.spacing


def _pick(anatomy: Anatomy, allowed: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random subject-space point (mm) in an ``allowed`` voxel (any brain voxel if none)."""
    candidates = np.flatnonzero(allowed) if allowed.any() else np.flatnonzero(anatomy.foreground)
    index = np.unravel_index(candidates[rng.integers(candidates.size)], anatomy.grid.shape)
    jitter = rng.uniform(-0.5, 0.5, 3)
    return anatomy.origin + anatomy.grid.spacing * (np.array(index) + jitter)


def _subject_point(anatomy: Anatomy, mni: np.ndarray, template_mm: np.ndarray) -> np.ndarray:
    """Subject-space mm of the voxel showing the MNI point nearest to ``mni``."""
    flat = np.argmin(np.sum((template_mm - mni[:, None, None, None]) ** 2, axis=0))
    index = np.unravel_index(flat, anatomy.grid.shape)
    return anatomy.origin + anatomy.grid.spacing * np.array(index)


def _ellipsoid_radius(
    anatomy: Anatomy, centre: np.ndarray, radii: np.ndarray, rotation: np.ndarray
) -> np.ndarray:
    """Normalised ellipsoidal radius: 1 on the surface of the rotated ellipsoid."""
    rel = _points(anatomy) - centre[:, None, None, None]
    local = np.einsum("ji,j...->i...", rotation, rel)
    return np.linalg.norm(local / radii[:, None, None, None], axis=0)


def _inside(rho: np.ndarray, level: float, radius_mm: float, spacing: float) -> np.ndarray:
    """Partial-volume fraction inside the ``rho = level`` surface (a one-voxel ramp)."""
    distance_vox = (rho - level) * radius_mm / spacing
    return np.clip(0.5 - distance_vox, 0.0, 1.0).astype(np.float32)


def _tissue_weight(anatomy: Anatomy, gm: float, wm: float) -> np.ndarray:
    """How much of a voxel a lesion may take: 0 in CSF, 1 in (weighted) parenchyma.

    A steep ramp of the weighted tissue fraction keeps partial lesion voxels to the tissue
    borders instead of spreading them over every mixed voxel.
    """
    return np.clip((gm * anatomy.gm + wm * anatomy.wm - 0.25) / 0.4, 0.0, 1.0)

