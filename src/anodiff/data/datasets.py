"""Dataset folders (design brief, "Dataset folders") loaded as one :class:`SliceDataset`.

Two layouts, told apart by :func:`open_dataset` (a ``DATA/images/`` folder means images):

- **volumes**: ``DATA/<case>/<case>_<seq>.<ext>`` per sequence (any 3-D format read by
  :func:`~anodiff.data.io.read_image`, a DICOM series as a folder ``<case>_<seq>/``),
  optional ``<case>_seg.<ext>`` (0 normal, > 0 lesion), optional ``DATA/splits.csv``
  (``case,split``; without it every case is ``train``). Each sequence volume is normalised on
  its own, the sequences are stacked as channels, sliced axially (:mod:`anodiff.data.slicing`:
  axis from the affine, radiological in-plane view, range pruning) and fitted to the model
  size.
- **images**: ``DATA/images/<id>.<ext>``, optional ``DATA/masks/<id>.<ext>``, optional
  ``DATA/labels.csv`` (``id,label,split``; an empty label cell means "from the mask"). Each
  image is normalised on its own; grey images give 1 channel, RGB 3.

A slice's label is 1 iff its mask has a positive pixel on the original slice grid (before
fitting, so a lesion too small to survive a nearest-neighbour downsizing still labels its
slice), unless labels.csv gives it. Slices are loaded eagerly into numpy.

Validation happens here, once: each problem is an :class:`~anodiff.errors.AnodiffError` naming
the file (or case) and the problem. Per-case problems (unreadable or non-finite files, a
missing sequence, shape or affine mismatches, a segmentation that is not a label map, or is
missing/empty when ``require_masks=True``) can be skipped with ``on_error="skip"``: the case
is left out, recorded in ``dataset.skipped`` and logged; loading fails only if no case is
left. Folder-level problems (bad CSVs, unknown splits, ids without files) always raise.

:func:`load_input` makes one detection input (a case folder, a volume or a 2-D image) into
slices with the same per-case loaders, so detection sees exactly what training saw.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from anodiff.data.io import Image, image_format, image_stem, read_image
from anodiff.data.normalise import (
    FIT_MODES,
    fit_to_size,
    normalisation_settings,
    normalise_intensity,
    unfit,
)
from anodiff.data.slicing import (
    ForegroundExtent,
    KeepRule,
    SliceLayout,
    slices_to_volume,
    stack_sequences,
    take_slices,
    volume_to_slices,
)
from anodiff.errors import AnodiffError

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
REGIMES = ("unsupervised", "self", "weak", "supervised")
_AFFINE_TOLERANCE = 1e-3  # mm (and direction cosine units): sequences share one grid
_PROGRESS_FROM = 20  # cases; smaller folders load without a progress bar
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


@dataclass(frozen=True, eq=False)
class _Geometry:
    """What puts one case's slice maps back on its voxel grid."""

    reference: Path
    spatial_shape: tuple[int, ...]
    plane_shape: tuple[int, int]
    layout: SliceLayout | None  # None for 2-D images


@dataclass(frozen=True, eq=False)
class _Loaded:
    """The slices of one case (or image), before they join the dataset."""

    images: np.ndarray
    masks: np.ndarray
    labels: np.ndarray
    indices: np.ndarray
    geometry: _Geometry


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
        geometry: dict[str, _Geometry],
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

    def for_regime(self, regime: str, split: str = "train") -> SliceDataset:
        """What a method of ``regime`` may train on (design brief, "Who may use what").

        unsupervised / self: the healthy slices of ``split`` only, masks withheld; weak: all
        slices of ``split`` with image labels, masks withheld; supervised: with masks.
        """
        if regime not in REGIMES:
            raise AnodiffError(f"unknown supervision regime '{regime}'; choose from {REGIMES}")
        data = self.split(split)
        if regime in ("unsupervised", "self"):
            data = data.healthy()
        if regime == "supervised":
            return data
        return data._subset(np.ones(len(data), dtype=bool), withhold_masks=True)

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

    def reference_image(self, case: str) -> Image:
        """The image a case's maps are written like (its first sequence; the image itself)."""
        return read_image(self._case(case).reference)

    def _case(self, case: str) -> _Geometry:
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


def open_dataset(
    root: str | Path,
    *,
    sequences: Sequence[str] | None = None,
    size: int = 64,
    fit: str = "resize",
    normalisation: str = "percentile",
    normalisation_params: dict[str, float] | None = None,
    keep: KeepRule | None = DEFAULT_KEEP,
    require_masks: bool = False,
    on_error: str = "raise",
) -> SliceDataset:
    """Load a dataset folder of either layout (auto-detected) as a :class:`SliceDataset`.

    ``sequences``: the channels of a volumes dataset, in order (default: every sequence all
    cases have, sorted). ``size``/``fit``: model size and :func:`~anodiff.data.normalise.
    fit_to_size` mode. ``normalisation``/``normalisation_params``: per volume (or image),
    see :func:`~anodiff.data.normalise.normalise_intensity`. ``keep``: slice-range pruning
    for volumes (None keeps all). ``require_masks``: every case needs a non-empty
    segmentation. ``on_error``: "raise" stops at the first bad case, "skip" leaves it out.
    """
    root = Path(root)
    if not root.is_dir():
        raise AnodiffError(f"{root}: dataset folder not found")
    if on_error not in ("raise", "skip"):
        raise AnodiffError(f"on_error must be 'raise' or 'skip', got '{on_error}'")
    options = _slice_options(size, fit, normalisation, normalisation_params, keep, require_masks)
    if (root / "images").is_dir():
        if sequences is not None:
            raise AnodiffError(f"{root}: an images dataset has no sequences to choose")
        return _open_images(root, options, on_error)
    return _open_volumes(root, sequences, options, on_error)


def _slice_options(
    size: int,
    fit: str,
    normalisation: str,
    normalisation_params: dict[str, float] | None,
    keep: KeepRule | None,
    require_masks: bool,
) -> SliceOptions:
    """Checked :class:`SliceOptions` (a boundary: values come from configs and users)."""
    options = SliceOptions(
        size=size,
        fit=fit,
        normalisation=normalisation,
        normalisation_params=tuple(sorted((normalisation_params or {}).items())),
        keep=keep,
        require_masks=require_masks,
    )
    if fit not in FIT_MODES or size < 1:
        raise AnodiffError(f"fit must be one of {FIT_MODES} and size positive (got {fit}, {size})")
    normalisation_settings(normalisation, **dict(options.normalisation_params))
    return options


# ---- one input, for detection ----------------------------------------------------------------


def load_input(
    path: str | Path,
    sequences: Sequence[str] | None,
    *,
    size: int = 64,
    fit: str = "resize",
    normalisation: str = "percentile",
    normalisation_params: dict[str, float] | None = None,
) -> SliceDataset:
    """One input to run a trained model on, made into slices exactly as training data is.

    ``sequences`` are a volumes model's channels, in order: the input is then a case folder
    holding ``<case>_<seq>.*`` for each of them (a segmentation there is ignored) or, for a
    one-sequence model, a single 3-D image or DICOM series folder. ``None`` means an images
    model: the input is one 2-D image (grey or RGB). ``size``, ``fit`` and ``normalisation``
    are as for :func:`open_dataset`; the case loaders are the training ones, so training and
    detection cannot drift apart. One difference, on purpose: no slice range is pruned. Every
    slice with foreground is kept so that a map covers the whole volume; slices without
    foreground are left out and come back as 0 from ``reassemble``.

    Returns a one-case :class:`SliceDataset` named after the folder or file stem (split
    ``test``, labels 0 and empty masks: a detection input carries no annotation), whose
    ``reassemble`` and ``reference_image`` put maps back on the input's grid; for a case
    folder the reference is the first sequence's image.
    """
    path = Path(path)
    if not path.exists():
        raise AnodiffError(f"{path}: not found")
    options = _slice_options(
        size, fit, normalisation, normalisation_params, ForegroundExtent(0.0), False
    )
    name = path.name if path.is_dir() else image_stem(path)
    if sequences is None:
        channels: list[int] = []

        def load(key: str) -> _Loaded:
            return _load_image(key, path, None, 0, channels, options)

        return _collect(path, [name], load, {name: "test"}, ("image",), options, "raise")
    names = tuple(sequences)
    files = _input_files(path, names)

    def load_volume(key: str) -> _Loaded:
        return _load_case(key, files, names, options)

    return _collect(path, [name], load_volume, {name: "test"}, names, options, "raise")


def _input_files(path: Path, sequences: tuple[str, ...]) -> dict[str, list[Path]]:
    """``{sequence: paths}`` of one detection input for a volumes model (no segmentation).

    A folder with ``<folder>_*`` images is a case folder; any other folder is a DICOM
    series, and it or a single file is the one sequence of a one-sequence model.
    """
    if path.is_dir():
        found = _case_files(path)
        if found or len(sequences) > 1:
            return {seq: paths for seq, paths in found.items() if seq != "seg"}
    elif len(sequences) > 1:
        raise AnodiffError(
            f"{path}: a single image, but the model takes the sequences {list(sequences)}; "
            f"give a case folder <case>/<case>_<sequence>.* instead"
        )
    return {sequences[0]: [path]}


# ---- volumes layout ------------------------------------------------------------------------


def _open_volumes(
    root: Path, sequences: Sequence[str] | None, options: SliceOptions, on_error: str
) -> SliceDataset:
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise AnodiffError(f"{root}: neither an images/ folder nor case folders")
    files = {folder.name: _case_files(folder) for folder in folders}
    splits, _ = _read_table(root / "splits.csv", list(files), "case", with_label=False)
    if sequences is None:
        common = set.intersection(*(set(f) - {"seg"} for f in files.values()))
        if not common:
            raise AnodiffError(f"{root}: no sequence is common to every case")
        sequences = sorted(common)
    sequences = tuple(sequences)
    if "seg" in sequences:
        raise AnodiffError("'seg' is the segmentation, not a sequence to use as a channel")

    def load(case: str) -> _Loaded:
        return _load_case(case, files[case], sequences, options)

    return _collect(root, list(files), load, splits, sequences, options, on_error)


def _case_files(folder: Path) -> dict[str, list[Path]]:
    """``{sequence: paths}`` for the ``<case>_<seq>.*`` images (or series folders) of a case.

    Several paths for one sequence (``t1.nii`` and ``t1.nrrd``) are kept and refused when the
    case is loaded, so that ``on_error="skip"`` can skip just that case.
    """
    found: dict[str, list[Path]] = {}
    prefix = folder.name + "_"
    for path in sorted(folder.iterdir()):
        stem = image_stem(path)
        if stem.startswith(prefix) and not path.name.startswith(".") and image_format(path):
            found.setdefault(stem[len(prefix) :], []).append(path)
    return found


def _only(case: str, sequence: str, files: dict[str, list[Path]]) -> Path:
    paths = files[sequence]
    if len(paths) > 1:
        names = ", ".join(p.name for p in paths)
        raise AnodiffError(f"case {case}: several files for sequence '{sequence}' ({names})")
    return paths[0]


def _load_case(
    case: str, files: dict[str, list[Path]], sequences: tuple[str, ...], options: SliceOptions
) -> _Loaded:
    missing = [s for s in sequences if s not in files]
    if missing:
        raise AnodiffError(f"case {case}: missing sequence(s) {missing} (has {sorted(files)})")
    images = {s: _read_volume(_only(case, s, files)) for s in sequences}
    first = images[sequences[0]]
    for image in images.values():
        _check_same_grid(first, image)
    seg = _read_volume(_only(case, "seg", files)) if "seg" in files else None
    if seg is not None:
        _check_same_grid(first, seg)
        _check_label_map(seg)
    _check_required_mask(case, seg, options)
    params = dict(options.normalisation_params)
    normalised = {
        s: normalise_intensity(im.array, options.normalisation, **params)
        for s, im in images.items()
    }
    foreground = np.any([im.array > im.array.min() for im in images.values()], axis=0)
    slices, layout = volume_to_slices(
        stack_sequences(normalised, sequences), first.affine, options.keep, foreground
    )
    if len(layout.indices) == 0:
        raise AnodiffError(f"case {case}: no slice left after pruning ({options.keep})")
    lesion = seg.array > 0 if seg is not None else np.zeros(first.array.shape, dtype=bool)
    mask_slices = take_slices(lesion, layout)
    return _Loaded(
        images=fit_to_size(slices, options.size, options.fit),
        masks=fit_to_size(mask_slices, options.size, options.fit),
        labels=mask_slices.any(axis=(1, 2)).astype(np.int64),
        indices=layout.indices.astype(np.int64),
        geometry=_Geometry(first.path, first.spatial_shape, layout.plane_shape, layout),
    )


def _read_volume(path: Path) -> Image:
    image = read_image(path)
    if image.rgb or image.array.ndim != 3:
        raise AnodiffError(f"{path}: expected a 3-D volume, got shape {image.array.shape}")
    return image


def _check_same_grid(first: Image, other: Image) -> None:
    if other.spatial_shape != first.spatial_shape:
        raise AnodiffError(
            f"{other.path}: shape {other.spatial_shape} differs from {first.spatial_shape} "
            f"of {first.path.name}"
        )
    if not np.allclose(other.affine, first.affine, rtol=0.0, atol=_AFFINE_TOLERANCE):
        raise AnodiffError(
            f"{other.path}: affine differs from {first.path.name}'s (max difference "
            f"{np.abs(other.affine - first.affine).max():.3g}); sequences must share one grid"
        )


def _check_label_map(seg: Image) -> None:
    values = seg.array
    bad = (values < 0) | (values != np.round(values))
    if bad.any():
        raise AnodiffError(
            f"{seg.path}: not a label map: {int(bad.sum())} voxels are negative or fractional "
            f"(e.g. {float(values[bad][0]):.4g}); use 0 for normal and positive integers for lesion"
        )


def _check_required_mask(case: str, seg: Image | None, options: SliceOptions) -> None:
    if not options.require_masks:
        return
    if seg is None:
        raise AnodiffError(f"case {case}: no segmentation <case>_seg.* (require_masks=True)")
    if not (seg.array > 0).any():
        raise AnodiffError(f"{seg.path}: segmentation is empty (require_masks=True)")


# ---- images layout -------------------------------------------------------------------------


def _open_images(root: Path, options: SliceOptions, on_error: str) -> SliceDataset:
    images = _id_files(root / "images")
    if not images:
        raise AnodiffError(f"{root / 'images'}: no images")
    masks = _id_files(root / "masks") if (root / "masks").is_dir() else {}
    orphans = sorted(set(masks) - set(images))
    if orphans:
        raise AnodiffError(f"{root / 'masks'}: masks without an image: {orphans[:5]}")
    splits, labels = _read_table(root / "labels.csv", list(images), "id", with_label=True)
    channels: list[int] = []

    def load(key: str) -> _Loaded:
        return _load_image(key, images[key], masks.get(key), labels.get(key), channels, options)

    return _collect(root, list(images), load, splits, ("image",), options, on_error)


def _id_files(folder: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or image_format(path) is None:
            continue
        key = image_stem(path)
        if key in found:
            raise AnodiffError(f"{path}: id '{key}' also in {found[key].name}")
        found[key] = path
    return found


def _load_image(
    key: str,
    path: Path,
    mask_path: Path | None,
    label: int | None,
    channels: list[int],
    options: SliceOptions,
) -> _Loaded:
    image = read_image(path)
    plane = _as_plane(image)
    if mask_path is not None:
        mask_image = read_image(mask_path)
        lesion = _as_plane(mask_image) > 0
        if lesion.ndim != 2 or lesion.shape != plane.shape[:2]:
            raise AnodiffError(
                f"{mask_path}: mask of shape {mask_image.array.shape} does not fit image "
                f"{path.name} of shape {image.array.shape}"
            )
    else:
        lesion = np.zeros(plane.shape[:2], dtype=bool)
    if label is None and mask_path is None:
        raise AnodiffError(f"{path}: no label (not in labels.csv and no mask in masks/)")
    chw = np.moveaxis(plane, -1, 0) if plane.ndim == 3 else plane[None]
    if not channels:  # the first image loaded sets the channel count
        channels.append(chw.shape[0])
    if chw.shape[0] != channels[0]:
        raise AnodiffError(f"{path}: {chw.shape[0]} channel(s), other images have {channels[0]}")
    normalised = normalise_intensity(
        chw, options.normalisation, **dict(options.normalisation_params)
    )
    return _Loaded(
        images=fit_to_size(normalised[None], options.size, options.fit),
        masks=fit_to_size(lesion[None], options.size, options.fit),
        labels=np.array([lesion.any() if label is None else label], dtype=np.int64),
        indices=np.zeros(1, dtype=np.int64),
        geometry=_Geometry(path, image.spatial_shape, lesion.shape, None),
    )


def _as_plane(image: Image) -> np.ndarray:
    """A 2-D image (H, W) or (H, W, 3); a volume with one singleton axis counts as 2-D."""
    spatial = image.spatial_shape
    if len(spatial) == 3 and spatial.count(1) == 1:
        return image.array.reshape([s for s in spatial if s != 1])
    if len(spatial) != 2:
        raise AnodiffError(f"{image.path}: expected a 2-D image, got shape {image.array.shape}")
    return image.array


# ---- shared --------------------------------------------------------------------------------


def _read_table(
    path: Path, keys: list[str], key_column: str, *, with_label: bool
) -> tuple[dict[str, str], dict[str, int]]:
    """``({key: split}, {key: label})`` from splits.csv / labels.csv, checked against ``keys``.

    Without the file every key is ``train`` and unlabelled; an empty label cell is no label.
    """
    if not path.exists():
        return dict.fromkeys(keys, "train"), {}
    columns = [key_column, "label", "split"] if with_label else [key_column, "split"]
    splits: dict[str, str] = {}
    labels: dict[str, int] = {}
    for line, row in _read_csv(path, columns):
        key, split = row[key_column].strip(), row["split"].strip()
        if key in splits:
            raise AnodiffError(f"{path}:{line}: '{key}' appears twice")
        if split not in SPLITS:
            raise AnodiffError(f"{path}:{line}: unknown split '{split}' for '{key}'; use {SPLITS}")
        splits[key] = split
        label = row["label"].strip() if with_label else ""
        if label not in ("", "0", "1"):
            raise AnodiffError(f"{path}:{line}: label '{label}' for '{key}' is not 0, 1 or empty")
        if label:
            labels[key] = int(label)
    unknown = sorted(set(splits) - set(keys))
    if unknown:
        raise AnodiffError(f"{path}: {key_column}s without a file: {unknown[:5]}")
    unlisted = sorted(set(keys) - set(splits))
    if unlisted:
        raise AnodiffError(f"{path}: no row for {key_column}s {unlisted[:5]}")
    return splits, labels


def _read_csv(path: Path, columns: list[str]) -> list[tuple[int, dict[str, str]]]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            missing = [c for c in columns if c not in (reader.fieldnames or [])]
            if missing:
                raise AnodiffError(
                    f"{path}: missing column(s) {missing}; expected header {','.join(columns)}"
                )
            return [(i + 2, row) for i, row in enumerate(reader)]
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise AnodiffError(f"{path}: unreadable CSV ({err})") from err


def _collect(
    root: Path,
    keys: list[str],
    load: Callable[[str], _Loaded],
    splits: dict[str, str],
    sequences: tuple[str, ...],
    options: SliceOptions,
    on_error: str,
) -> SliceDataset:
    """Load every case, skipping bad ones when asked, and concatenate their slices."""
    loaded: dict[str, _Loaded] = {}
    skipped: list[tuple[str, str]] = []
    bar = tqdm(keys, desc=f"loading {root.name}", unit="case", disable=len(keys) < _PROGRESS_FROM)
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
