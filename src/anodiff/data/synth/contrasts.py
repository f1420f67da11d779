"""Noise-free T1-, T2- and FLAIR-like images from tissue maps, with lesions mixed in.

T1 is the template's own T1 (real grey-level detail). T2 and FLAIR are synthesised as
partial-volume mixtures of tissue intensities: CSF bright in T2 and suppressed in FLAIR,
white matter darker than grey matter in both, as in clinical scans. The intensities are
on a nominal scale (T1 white matter ~0.87, T2 CSF 1.0) that acquisition then distorts.

A lesion compartment occupies a fraction ``f`` of a voxel and replaces that much healthy
tissue: ``I = (1 - sum f) * healthy + sum f * lesion``. How a compartment looks is an
:class:`Appearance` per sequence, either a mixture of the case's tissue intensities
(stroke in T1 ~ half CSF, half GM) or a small change of the local healthy intensity (the
low-contrast track's nearly iso-intense T1), so lesions sit inside, not beyond, the range
of healthy tissue wherever the real pathology does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from anodiff.data.synth.anatomy import Anatomy

SEQUENCES = ("t1", "t2", "flair")
TISSUES = ("csf", "gm", "wm")
NOMINAL = {
    "t2": {"csf": 1.0, "gm": 0.55, "wm": 0.40},
    "flair": {"csf": 0.08, "gm": 0.60, "wm": 0.45},
}
"""Tissue intensities of the synthesised sequences (T1 takes the template's own means)."""

TissueMeans = dict[str, dict[str, float]]
"""Per sequence, the case's mean intensity of each pure tissue."""


@dataclass(frozen=True)
class Mix:
    """A lesion intensity that is a weighted sum of the case's tissue intensities."""

    weights: dict[str, float]

    def value(self, healthy: np.ndarray, means: dict[str, float]) -> np.ndarray | float:
        """The lesion intensity (a scalar: it does not depend on the local tissue)."""
        return sum(w * means[tissue] for tissue, w in self.weights.items())


@dataclass(frozen=True)
class Relative:
    """A lesion intensity that is the local healthy intensity changed by ``delta`` (x100 %)."""

    delta: float

    def value(self, healthy: np.ndarray, means: dict[str, float]) -> np.ndarray | float:
        """The lesion intensity, voxel by voxel."""
        return healthy * (1.0 + self.delta)


Appearance = Mix | Relative


@dataclass(frozen=True, eq=False)
class Compartment:
    """One lesion tissue: its label, voxel fractions, look per sequence and texture.

    ``texture`` multiplies the lesion intensity (heterogeneity, mean ~1).
    """

    label: int
    fraction: np.ndarray
    look: dict[str, Appearance]
    texture: np.ndarray


def tissue_means(anatomy: Anatomy, gain: dict[str, dict[str, float]]) -> TissueMeans:
    """The case's tissue intensities: the template's T1 means, T2/FLAIR nominals x ``gain``."""
    means = {"t1": dict(anatomy.reference.t1_means)}
    for seq, nominal in NOMINAL.items():
        means[seq] = {t: v * gain[seq][t] for t, v in nominal.items()}
    return means


def healthy_images(anatomy: Anatomy, means: TissueMeans) -> dict[str, np.ndarray]:
    """T1 from the template, T2 and FLAIR as tissue mixtures (float32, nominal scale)."""
    fractions = {"csf": anatomy.csf, "gm": anatomy.gm, "wm": anatomy.wm}
    images = {"t1": anatomy.t1.astype(np.float32)}
    for seq in NOMINAL:
        images[seq] = sum(means[seq][t] * fractions[t] for t in TISSUES).astype(np.float32)
    return images


def with_lesion(
    healthy: dict[str, np.ndarray], compartments: Sequence[Compartment], means: TissueMeans
) -> dict[str, np.ndarray]:
    """Replace the lesion fractions of healthy tissue by lesion tissue, per sequence."""
    total = sum(c.fraction for c in compartments)
    out = {}
    for seq, image in healthy.items():
        mixed = (1.0 - total) * image
        for c in compartments:
            mixed = mixed + c.fraction * c.texture * c.look[seq].value(image, means[seq])
        out[seq] = mixed.astype(np.float32)
    return out
