"""One benchmark case from (seed, track, index): anatomy, lesion, contrasts, acquisition.

Each case owns a :class:`numpy.random.SeedSequence` keyed by (seed, track, index) and
split into three independent streams (anatomy, lesion, acquisition), so that

- any case can be generated alone, in any order or process, with identical results;
- a case rendered without its lesion (``lesion=False``; ``Case.twin`` also keeps a
  tumour's mass effect, and shows a structural track's anatomy before its change) has
  the very same anatomy, bias, gamma and noise samples: the
  lesion is the only difference (see :func:`render`);
- a track's cases do not change when other tracks are built or not.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from anodiff.data.synth.acquisition import SHIFTED, STANDARD, Scanner, acquire, draw_scanner
from anodiff.data.synth.anatomy import Anatomy, Grid, healthy_anatomy
from anodiff.data.synth.contrasts import Compartment, healthy_images, tissue_means, with_lesion
from anodiff.data.synth.lesions import TRACKS, insert_lesion


@dataclass(frozen=True, eq=False)
class Case:
    """A generated case: acquired images (float32, 0 outside the brain) and its mask.

    ``seg`` is uint8 (0 normal, >0 lesion; tumour labels 1 necrosis, 2 oedema,
    3 enhancing); ``twin`` is the same case rendered without its lesion (a tumour's mass
    effect kept), the exact reference for what the lesion changed; ``parenchyma`` marks
    brain voxels that are mostly grey or white matter.
    """

    name: str
    images: dict[str, np.ndarray]
    twin: dict[str, np.ndarray]
    seg: np.ndarray
    affine: np.ndarray
    foreground: np.ndarray
    parenchyma: np.ndarray


def case_name(track: str, index: int) -> str:
    """The folder and file prefix of a case, e.g. ``stroke-0007``."""
    return f"{track}-{index:04d}"


def case_streams(
    seed: int, track: str, index: int
) -> tuple[np.random.Generator, np.random.Generator, np.random.Generator]:
    """The (anatomy, lesion, acquisition) random streams of one case."""
    root = np.random.SeedSequence(seed, spawn_key=(list(TRACKS).index(track), index))
    anatomy, lesion, acquisition = (np.random.default_rng(s) for s in root.spawn(3))
    return anatomy, lesion, acquisition


def render(
    anatomy: Anatomy, compartments: Sequence[Compartment], scanner: Scanner
) -> dict[str, np.ndarray]:
    """Acquired T1/T2/FLAIR images of ``anatomy`` with lesion ``compartments`` (may be none)."""
    means = tissue_means(anatomy, scanner.tissue_gain)
    clean = with_lesion(healthy_images(anatomy, means), compartments, means)
    return acquire(clean, anatomy.foreground, scanner)


def make_case(track: str, index: int, *, seed: int = 0, size: int = 64,
              lesion: bool = True, shifted: bool = False) -> Case:
    """Generate case ``index`` of ``track``, with its lesion or as its healthy twin;
    ``shifted`` acquires it on a scanner of the :data:`~anodiff.data.synth.acquisition.SHIFTED`
    family instead of the standard one."""
    anatomy_rng, lesion_rng, acquisition_rng = case_streams(seed, track, index)
    grid = Grid(size)
    anatomy = healthy_anatomy(grid, anatomy_rng)
    scanner = draw_scanner(grid.shape, acquisition_rng, SHIFTED if shifted else STANDARD)
    compartments: tuple[Compartment, ...] = ()
    seg = np.zeros(grid.shape, dtype=np.uint8)
    reference = anatomy
    if lesion:
        drawn = insert_lesion(track, anatomy, lesion_rng)
        anatomy, compartments, seg = drawn.anatomy, drawn.compartments, drawn.seg()
        reference = drawn.reference
    twin = render(reference, (), scanner)
    images = render(anatomy, compartments, scanner) if anatomy is not reference or \
        compartments else twin
    return Case(name=case_name(track, index), images=images, twin=twin,
                seg=seg, affine=anatomy.affine, foreground=anatomy.foreground,
                parenchyma=anatomy.foreground & (anatomy.gm + anatomy.wm >= 0.5))
