"""The slices of a dataset or of one input, and how they are put back on their grid.

:class:`SliceDataset` holds every slice of a dataset folder (or of one detection input) as
arrays, with per-case geometry so maps go back onto each case's voxel grid; the layout
readers (:mod:`.volumes`, :mod:`.images`) load one case at a time into a
:class:`LoadedCase`, and :func:`collect_cases` joins them, skipping bad cases when asked;
a :class:`CaseSource` is the cases before they are read (all at once, or one at a time).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from anodiff.data.io import Image, read_image
from anodiff.data.normalise import scaled_shape, unfit
from anodiff.data.picking import one_per_case_in_turn
from anodiff.data.slicing import ForegroundExtent, KeepRule, SliceLayout, slices_to_volume
from anodiff.errors import AnodiffError
from anodiff.progress import progress_bar

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
REGIMES = ("unsupervised", "self", "weak", "semi", "supervised")
UNLABELLED = -1  # the label of a slice whose label and mask the semi regime withholds
PROGRESS_FROM = 20  # cases; smaller folders load without a progress bar
DEFAULT_KEEP = ForegroundExtent(0.1)


@dataclass(frozen=True)
class SliceOptions:
    """How slices are made: see :func:`open_dataset`."""

    size: int = 64
    fit: str = "resize"
    normalisation: str = "percentile"
    normalisation_params: tuple[tuple[str, float], ...] = ()
    keep: KeepRule | None = DEFAULT_KEEP
    require_masks: bool = False
    context: int = 0  # neighbouring slices per side appended as channels (volumes only)


@dataclass(frozen=True, eq=False)
class CaseGeometry:
    """What puts one case's slice maps back on its voxel grid, and its voxel size."""

    reference: Path
    spatial_shape: tuple[int, ...]
    plane_shape: tuple[int, int]
    layout: SliceLayout | None  # None for 2-D images
    spacing: tuple[float, ...] = ()  # mm of the voxel axes (the reference image's)


@dataclass(frozen=True, eq=False)
class LoadedCase:
    """The slices of one case (or image), before they join the dataset."""

    images: np.ndarray
    masks: np.ndarray
    labels: np.ndarray
    indices: np.ndarray
    geometry: CaseGeometry


class SliceDataset(torch.utils.data.Dataset):
    """2-D slices with channels = sequences, in [0, 1] at the model size, and their labels.

    Arrays (row i is one slice): ``images`` (N, C, S, S) float32, ``labels`` (N,) int64,
    ``masks`` (N, S, S) bool (all-False without segmentation, or when withheld),
    ``cases`` (N,) str, ``indices`` (N,) int (voxel index along the axial axis; 0 for
    images), ``splits`` (N,) str. Subsets (``split``, ``healthy``, ``for_regime``) share the
    case geometry, so ``reassemble`` works on any of them.
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        masks: np.ndarray,
        cases: np.ndarray,
        indices: np.ndarray,
        splits: np.ndarray,
        *,
        sequences: tuple[str, ...],
        options: SliceOptions,
        geometry: dict[str, CaseGeometry],
        skipped: Sequence[tuple[str, str]] = (),
    ) -> None:
        self.images, self.labels, self.masks = images, labels, masks
        self.cases, self.indices, self.splits = cases, indices, splits
        self.sequences, self.options = sequences, options
        self.skipped = list(skipped)
        self._geometry = geometry

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {
            "image": torch.from_numpy(self.images[i]),
            "label": torch.tensor(int(self.labels[i]), dtype=torch.long),
            "mask": torch.from_numpy(self.masks[i]),
            "case": str(self.cases[i]),
            "index": int(self.indices[i]),
        }

    @property
    def volumetric(self) -> bool:
        """Whether the slices come from 3-D volumes (normalised per volume) rather than 2-D
        images (normalised per image)."""
        return any(g.layout is not None for g in self._geometry.values())

    @property
    def centre_sequences(self) -> tuple[str, ...]:
        """The sequences of the slice itself: ``sequences`` without the context channels
        (``options.context`` neighbours per side, :func:`~anodiff.data.slicing.context_names`)."""
        return centre_sequences(self.sequences, self.options)

    @property
    def case_ids(self) -> list[str]:
        """The cases (or image ids) with at least one slice here, in dataset order."""
        return list(dict.fromkeys(self.cases.tolist()))

    def split(self, name: str) -> SliceDataset:
        """The slices of one split (train, val or test)."""
        if name not in SPLITS:
            raise AnodiffError(f"unknown split '{name}'; choose from {SPLITS}")
        return self._subset(self.splits == name)

    def select_cases(self, case_ids: Sequence[str]) -> SliceDataset:
        """The slices of the given cases (or image ids), in dataset order."""
        unknown = sorted(set(case_ids) - set(self.case_ids))
        if unknown:
            raise AnodiffError(f"unknown case(s) {unknown[:5]}")
        return self._subset(np.isin(self.cases, list(case_ids)))

    def healthy(self) -> SliceDataset:
        """The slices labelled healthy (0)."""
        return self._subset(self.labels == 0)

    def for_regime(self, regime: str, split: str = "train", labelled: int = 0, seed: int = 0
                   ) -> SliceDataset:
        """What a method of ``regime`` may train on (design brief, "Who may use what").

        unsupervised / self: the healthy slices of ``split`` only, masks withheld; weak: all
        slices of ``split`` with image labels, masks withheld; semi: all slices of ``split``,
        each labelled :data:`UNLABELLED` with its mask withheld except ``labelled`` slices
        with a lesion, which keep label and mask (picked one case at a time with ``seed``:
        :meth:`labelled_rows`); supervised: all slices with labels and masks.
        """
        if regime not in REGIMES:
            raise AnodiffError(f"unknown supervision regime '{regime}'; choose from {REGIMES}")
        data = self.split(split)
        if regime in ("unsupervised", "self"):
            data = data.healthy()
        if regime == "supervised":
            return data
        withheld = data._subset(np.ones(len(data), dtype=bool), withhold_masks=True)
        if regime == "semi":
            keep = data.labelled_rows(labelled, seed)
            withheld.labels = np.full_like(data.labels, UNLABELLED)
            withheld.labels[keep] = data.labels[keep]
            withheld.masks[keep] = data.masks[keep]
        return withheld

    def labelled_rows(self, count: int, seed: int) -> np.ndarray:
        """Rows of ``count`` slices with a lesion pixel, one case at a time in a seeded
        order (:func:`~anodiff.data.picking.one_per_case_in_turn`); more than there are is
        an error."""
        lesioned = np.flatnonzero(self.masks.reshape(len(self.masks), -1).any(1))
        if count > len(lesioned):
            raise AnodiffError(f"{count} labelled slices asked for, but only {len(lesioned)} "
                               "slices of this split have a lesion in their mask (volumes: "
                               "DATA/<case>/<case>_seg.nii.gz; images: DATA/masks/<id>.<ext>)")
        return lesioned[one_per_case_in_turn(self.cases[lesioned], count, seed)]

    def reassemble(self, case: str, slice_maps: np.ndarray) -> np.ndarray:
        """Per-slice maps of ``case`` (k, S, S), in this dataset's order, on the case's grid.

        The result has the reference image's spatial shape (:meth:`reference_image`): slices
        not in this dataset (pruned, or filtered out of this subset) are 0. Bool maps stay
        bool (nearest resampling).
        """
        geometry = self._case(case)
        rows = np.flatnonzero(self.cases == case)
        maps = np.asarray(slice_maps)
        if maps.shape != (len(rows), *self.images.shape[-2:]):
            raise ValueError(
                f"case {case} has {len(rows)} slices of {self.images.shape[-2:]} here; "
                f"got maps of shape {maps.shape}"
            )
        planes = unfit(maps, geometry.plane_shape, self.options.fit)
        if geometry.layout is None:
            return planes[0].reshape(geometry.spatial_shape)
        return slices_to_volume(planes, replace(geometry.layout, indices=self.indices[rows]))

    def pixel_mm(self, case: str) -> tuple[float, float] | None:
        """The (row, column) size in mm of one pixel of ``case``'s slices on the model grid
        (the voxel size scaled by the fitting); None when the file states no voxel size or
        the case is a 2-D image."""
        geometry = self._case(case)
        if geometry.layout is None or not geometry.spacing:
            return None
        layout, spacing = geometry.layout, geometry.spacing
        height, width = geometry.plane_shape
        scaled_h, scaled_w = scaled_shape(geometry.plane_shape, self.options.size,
                                          self.options.fit)
        return (spacing[layout.rows] * height / scaled_h, spacing[layout.cols] * width / scaled_w)

    def voxel_ml(self, case: str) -> float:
        """The volume in ml of one voxel of ``case``'s slices on the model grid (the slice
        thickness times the pixel area after fitting); NaN for 2-D images, which have no
        thickness."""
        geometry, pixel = self._case(case), self.pixel_mm(case)
        if pixel is None or geometry.layout is None:
            return math.nan
        return pixel[0] * pixel[1] * geometry.spacing[geometry.layout.axis] / 1000.0

    def reference_image(self, case: str) -> Image:
        """The image a case's maps are written like (its first sequence; the image itself)."""
        return read_image(self._case(case).reference)

    def _case(self, case: str) -> CaseGeometry:
        if case not in self._geometry:
            raise AnodiffError(f"unknown case '{case}'")
        return self._geometry[case]

    def _subset(self, rows: np.ndarray, withhold_masks: bool = False) -> SliceDataset:
        masks = np.zeros_like(self.masks[rows]) if withhold_masks else self.masks[rows]
        return SliceDataset(
            self.images[rows],
            self.labels[rows],
            masks,
            self.cases[rows],
            self.indices[rows],
            self.splits[rows],
            sequences=self.sequences,
            options=self.options,
            geometry=self._geometry,
            skipped=self.skipped,
        )




def centre_sequences(sequences: tuple[str, ...], options: SliceOptions) -> tuple[str, ...]:
    """The channels of a slice itself among ``sequences``, without the ``options.context``
    neighbouring slices per side a 2.5-D input appends."""
    return sequences[:len(sequences) // (2 * options.context + 1)]


def cases_of_splits(root: Path, keys: Sequence[str], splits: Mapping[str, str],
                    wanted: Collection[str] | None, table: str = "splits.csv: case,split"
                    ) -> list[str]:
    """The ``keys`` whose split is one of ``wanted`` (every key without it), so that a task
    that needs only some splits (``evaluate``: test and val) never reads the others; an
    error naming the ``table`` that assigns splits when no case is in them."""
    if wanted is None:
        return list(keys)
    chosen = [key for key in keys if splits[key] in wanted]
    if not chosen:
        raise AnodiffError(f"{root}: no case in the {' or '.join(wanted)} split ({table})")
    return chosen


@dataclass(frozen=True, eq=False)
class CaseSource:
    """The cases of a dataset folder before they are read, each read on demand by ``load``
    into its slices: as one :class:`SliceDataset` (:meth:`dataset`), or one case at a time
    (:meth:`each`: a task that reduces case by case, ``anodiff evaluate``, then holds one
    case's slices, not the split's). ``skipped``: (case, reason) of the cases left out before
    reading (a missing sequence); ``on_error`` says what a case that cannot be read does
    ("raise" or "skip")."""

    root: Path
    keys: tuple[str, ...]
    load: Callable[[str], LoadedCase]
    splits: Mapping[str, str]
    sequences: tuple[str, ...]
    options: SliceOptions
    on_error: str
    skipped: tuple[tuple[str, str], ...] = ()

    @property
    def centre_sequences(self) -> tuple[str, ...]:
        """The sequences of the slice itself (:attr:`SliceDataset.centre_sequences`)."""
        return centre_sequences(self.sequences, self.options)

    def dataset(self) -> SliceDataset:
        """Every case read and their slices joined (bad ones skipped when asked)."""
        return collect_cases(self.root, list(self.keys), self.load, dict(self.splits),
                             self.sequences, self.options, self.on_error, self.skipped)

    def of_split(self, name: str) -> CaseSource:
        """The cases of one split (train, val or test), none read yet."""
        if name not in SPLITS:
            raise AnodiffError(f"unknown split '{name}'; choose from {SPLITS}")
        return replace(self, keys=tuple(k for k in self.keys if self.splits[k] == name),
                       skipped=())

    def each(self) -> Iterator[SliceDataset]:
        """The cases in order, each read as it is asked for and given as a dataset of its
        slices alone; a case that cannot be read is skipped and logged (``on_error="skip"``)
        or stops the iteration with its error."""
        for key, reason in self.skipped:
            log.warning("skipping %s: %s", key, reason)
        for key in self.keys:
            try:
                loaded = self.load(key)
            except AnodiffError as err:
                if self.on_error == "raise":
                    raise
                log.warning("skipping %s: %s", key, err)
                continue
            yield joined_cases({key: loaded}, dict(self.splits), self.sequences, self.options,
                               [])


def collect_cases(
    root: Path,
    keys: list[str],
    load: Callable[[str], LoadedCase],
    splits: dict[str, str],
    sequences: tuple[str, ...],
    options: SliceOptions,
    on_error: str,
    skipped_before: Sequence[tuple[str, str]] = (),
) -> SliceDataset:
    """Load every case, skipping bad ones when asked, and concatenate their slices.

    ``skipped_before``: (case, reason) of cases the caller already left out; they are logged
    and recorded in ``dataset.skipped`` with the ones skipped here."""
    loaded: dict[str, LoadedCase] = {}
    skipped: list[tuple[str, str]] = list(skipped_before)
    for key, reason in skipped:
        log.warning("skipping %s: %s", key, reason)
    bar = progress_bar(keys, desc=f"loading {root.name}", unit="case",
                       enabled=len(keys) >= PROGRESS_FROM)
    for key in bar:
        try:
            loaded[key] = load(key)
        except AnodiffError as err:
            if on_error == "raise":
                raise
            skipped.append((key, str(err)))
            log.warning("skipping %s: %s", key, err)
    if not loaded:
        reasons = "; ".join(f"{k}: {m}" for k, m in skipped[:3])
        raise AnodiffError(f"{root}: no case could be loaded ({reasons})")
    return joined_cases(loaded, splits, sequences, options, skipped)


def joined_cases(loaded: Mapping[str, LoadedCase], splits: Mapping[str, str],
                 sequences: tuple[str, ...], options: SliceOptions,
                 skipped: list[tuple[str, str]]) -> SliceDataset:
    """The slices of the ``loaded`` cases, in order, as one dataset."""
    parts = list(loaded.values())
    n = [len(p.labels) for p in parts]
    return SliceDataset(
        np.concatenate([p.images for p in parts]),
        np.concatenate([p.labels for p in parts]),
        np.concatenate([p.masks for p in parts]),
        np.repeat(np.array(list(loaded), dtype=object), n).astype(str),
        np.concatenate([p.indices for p in parts]),
        np.repeat(np.array([splits[k] for k in loaded], dtype=object), n).astype(str),
        sequences=sequences,
        options=options,
        geometry={k: p.geometry for k, p in loaded.items()},
        skipped=skipped,
    )
