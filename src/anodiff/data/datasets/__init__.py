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
the file (or case) and the problem. Per-case problems (unreadable or non-finite files,
shape or affine mismatches, a segmentation that is not a label map, or is missing/empty
when ``require_masks=True``) can be skipped with ``on_error="skip"``: the case is left out,
recorded in ``dataset.skipped`` and logged; loading fails only if no case is left. Cases
that lack a sequence are an error naming them unless ``on_missing="skip"`` (the channels
are never changed silently). Folder-level problems (bad CSVs, unknown splits, ids without
files) always raise.

:func:`load_input` makes one detection input (a case folder, a volume or a 2-D image) into
slices with the same per-case loaders, so detection sees exactly what training saw.

Modules: :mod:`.slices` (the dataset and its geometry), :mod:`.volumes` and :mod:`.images`
(one module a layout), :mod:`.tables` (splits.csv and labels.csv).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from anodiff.data.datasets.images import load_image, open_images
from anodiff.data.datasets.slices import (
    DEFAULT_KEEP,
    REGIMES,
    SPLITS,
    LoadedCase,
    SliceDataset,
    SliceOptions,
    collect_cases,
)
from anodiff.data.datasets.volumes import input_files, load_case, open_volumes
from anodiff.data.io import image_stem
from anodiff.data.normalise import FIT_MODES, normalisation_settings
from anodiff.data.slicing import ForegroundExtent, KeepRule
from anodiff.errors import AnodiffError

__all__ = ["DEFAULT_KEEP", "REGIMES", "SPLITS", "SliceDataset", "SliceOptions", "load_input",
           "open_dataset"]


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
    on_missing: str = "raise",
) -> SliceDataset:
    """Load a dataset folder of either layout (auto-detected) as a :class:`SliceDataset`.

    ``sequences``: the channels of a volumes dataset, in order (default: every sequence all
    cases have, sorted). ``size``/``fit``: model size and :func:`~anodiff.data.normalise.
    fit_to_size` mode. ``normalisation``/``normalisation_params``: per volume (or image),
    see :func:`~anodiff.data.normalise.normalise_intensity`. ``keep``: slice-range pruning
    for volumes (None keeps all). ``require_masks``: every case needs a non-empty
    segmentation. ``on_error``: "raise" stops at the first bad case, "skip" leaves it out.
    ``on_missing``: cases of a volumes dataset that lack one of the sequences are an error
    naming them ("raise") or are left out and named ("skip"); never a silent change of the
    channels.
    """
    root = Path(root)
    if not root.is_dir():
        raise AnodiffError(f"{root}: dataset folder not found")
    for name, value in (("on_error", on_error), ("on_missing", on_missing)):
        if value not in ("raise", "skip"):
            raise AnodiffError(f"{name} must be 'raise' or 'skip', got '{value}'")
    options = slice_options(size, fit, normalisation, normalisation_params, keep, require_masks)
    if (root / "images").is_dir():
        if sequences is not None:
            raise AnodiffError(f"{root}: an images dataset has no sequences to choose")
        return open_images(root, options, on_error)
    return open_volumes(root, sequences, options, on_error, on_missing)


def slice_options(
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
    options = slice_options(
        size, fit, normalisation, normalisation_params, ForegroundExtent(0.0), False
    )
    name = path.name if path.is_dir() else image_stem(path)
    if sequences is None:
        channels: list[int] = []

        def load(key: str) -> LoadedCase:
            return load_image(key, path, None, 0, channels, options)

        return collect_cases(path, [name], load, {name: "test"}, ("image",), options, "raise")
    names = tuple(sequences)
    files = input_files(path, names)

    def load_volume(key: str) -> LoadedCase:
        return load_case(key, files, names, options)

    return collect_cases(path, [name], load_volume, {name: "test"}, names, options, "raise")
