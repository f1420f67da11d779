"""Dataset folders (design brief, "Dataset folders") loaded as one :class:`SliceDataset`.

Two kinds, told apart by :func:`open_dataset` (a ``DATA/images/`` folder means images):

- **volumes**: cases of named 3-D sequence images in any layout
  :mod:`anodiff.data.layouts` reads (anodiff's ``DATA/<case>/<case>_<seq>.<ext>``, nnU-Net
  raw data, BIDS, a flat folder of files, DICOM series folders), an optional segmentation
  (0 normal, > 0 lesion), optional ``DATA/splits.csv`` (``case,split``; without it the
  layout's own split, nnU-Net's imagesTs being ``test``, else ``train``). Each sequence
  volume is normalised on its own, the sequences are stacked as channels, sliced axially
  (:mod:`anodiff.data.slicing`: axis from the affine, radiological in-plane view, range
  pruning) and fitted to the model size.
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

:func:`find_inputs` reads a detection input (a case folder, a volume, a 2-D image, or a
folder of cases in any layout) as cases, and :func:`load_input_case` makes one into slices
with the same per-case loaders, so detection sees exactly what training saw.

Modules: :mod:`.slices` (the dataset and its geometry), :mod:`.volumes` and :mod:`.images`
(one module a layout), :mod:`.tables` (splits.csv and labels.csv).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from anodiff.data.datasets.images import load_image, open_images
from anodiff.data.datasets.slices import (
    DEFAULT_KEEP,
    REGIMES,
    SPLITS,
    UNLABELLED,
    CaseSource,
    LoadedCase,
    SliceDataset,
    SliceOptions,
    collect_cases,
)
from anodiff.data.datasets.volumes import load_case, open_volumes
from anodiff.data.io import image_format, image_stem
from anodiff.data.layouts import (
    SEGMENTATION,
    UNNAMED,
    CaseFiles,
    discover,
    find_layout,
    match_sequences,
)
from anodiff.data.normalise import FIT_MODES, normalisation_settings
from anodiff.data.slicing import ForegroundExtent, KeepRule, context_names
from anodiff.errors import AnodiffError

MAX_CONTEXT = 8  # neighbouring slices per side a 2.5-D input may carry

__all__ = ["DEFAULT_KEEP", "REGIMES", "SPLITS", "UNLABELLED", "CaseSource", "InputCase",
           "SliceDataset", "SliceOptions", "find_inputs", "load_input_case", "open_cases",
           "open_dataset"]


def open_dataset(root: str | Path, **options: Any) -> SliceDataset:
    """Load a dataset folder (layout auto-detected) as a :class:`SliceDataset`: every case
    of :func:`open_cases` (the same keyword arguments: sequences, size, fit, normalisation,
    keep, on_error, only_splits, ...) read and joined."""
    return open_cases(root, **options).dataset()


def open_cases(
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
    layout: str = "auto",
    sequence_map: Mapping[str, str] | None = None,
    context: int = 0,
    only_splits: Collection[str] | None = None,
) -> CaseSource:
    """The cases of a dataset folder (layout auto-detected), checked but not read yet
    (:class:`CaseSource`: all at once, or one at a time).

    ``sequences``: the channels of a volumes dataset, in order (default: every sequence all
    cases have, sorted). ``size``/``fit``: model size and :func:`~anodiff.data.normalise.
    fit_to_size` mode. ``normalisation``/``normalisation_params``: per volume (or image),
    see :func:`~anodiff.data.normalise.normalise_intensity`. ``keep``: slice-range pruning
    for volumes (None keeps all). ``require_masks``: every case needs a non-empty
    segmentation. ``on_error``: "raise" stops at the first bad case, "skip" leaves it out.
    ``on_missing``: cases of a volumes dataset that lack one of the sequences are an error
    naming them ("raise") or are left out and named ("skip"); never a silent change of the
    channels. ``layout``/``sequence_map``: see :func:`anodiff.data.layouts.discover` (``auto``
    detects the layout; the map renames sequences, e.g. ``{"T1map": "t1"}``). ``context``:
    the neighbouring slices per side each slice carries as extra channels (2.5-D input;
    volumes only; :func:`~anodiff.data.slicing.volume_to_slices`). ``only_splits``: read
    only the cases of these splits (``evaluate`` needs test and val, not the training cases).
    """
    root = Path(root)
    if not root.is_dir():
        raise AnodiffError(f"{root}: dataset folder not found")
    for name, value in (("on_error", on_error), ("on_missing", on_missing)):
        if value not in ("raise", "skip"):
            raise AnodiffError(f"{name} must be 'raise' or 'skip', got '{value}'")
    options = slice_options(size, fit, normalisation, normalisation_params, keep, require_masks,
                            context)
    kind = find_layout(root) if layout == "auto" else layout
    if kind == "images":
        if sequences is not None:
            raise AnodiffError(f"{root}: an images dataset has no sequences to choose")
        if context:
            raise AnodiffError(f"{root}: an images dataset has no neighbouring slices; "
                               "context needs volumes")
        return open_images(root, options, on_error, only_splits)
    return open_volumes(discover(root, kind, sequence_map), sequences, options, on_error,
                        on_missing, only_splits)


def slice_options(
    size: int,
    fit: str,
    normalisation: str,
    normalisation_params: dict[str, float] | None,
    keep: KeepRule | None,
    require_masks: bool,
    context: int = 0,
) -> SliceOptions:
    """Checked :class:`SliceOptions` (a boundary: values come from configs and users)."""
    options = SliceOptions(
        size=size,
        fit=fit,
        normalisation=normalisation,
        normalisation_params=tuple(sorted((normalisation_params or {}).items())),
        keep=keep,
        require_masks=require_masks,
        context=context,
    )
    if not 0 <= context <= MAX_CONTEXT:
        raise AnodiffError(f"context must be 0 to {MAX_CONTEXT} neighbouring slices per side, "
                           f"got {context}")
    if fit not in FIT_MODES or size < 1:
        raise AnodiffError(f"fit must be one of {FIT_MODES} and size positive (got {fit}, {size})")
    normalisation_settings(normalisation, **dict(options.normalisation_params))
    return options


@dataclass(frozen=True)
class InputCase:
    """One case of a detection input: its name (which names its outputs), what the user
    gave or would recognise (``source``: the case folder, file or series), the files chosen
    for the model's sequences, and the sequences not found (with the pattern looked for)."""

    name: str
    source: Path
    files: CaseFiles
    missing: tuple[str, ...] = ()


def find_inputs(
    path: str | Path,
    sequences: Sequence[str] | None,
    *,
    layout: str = "auto",
    sequence_map: Mapping[str, str] | None = None,
) -> list[InputCase]:
    """The cases a detection input holds, with the files for a model's ``sequences``.

    ``sequences`` are a volumes model's channels, in order; ``None`` means an images model,
    whose input is a 2-D image or a folder of them (``DATA/images/`` included). Anything
    :func:`~anodiff.data.layouts.discover` reads is an input: a case folder, a single volume
    or DICOM series (for a one-sequence model), a folder of such files, a dataset root in
    anodiff's, nnU-Net's or BIDS layout. A case lacking a sequence is returned with
    ``missing`` set, so that the caller can report it and go on with the others.
    """
    path = Path(path)
    if sequences is None:
        return _image_inputs(path)
    found = discover(path, layout, sequence_map)
    cases = []
    for name in found.cases:
        files, missing = match_sequences(found, name, sequences)
        files.pop(SEGMENTATION, None)  # a detection input carries no annotation
        cases.append(InputCase(name, _source(found.layout, path, name, files), files,
                               tuple(missing)))
    return cases


def _image_inputs(path: Path) -> list[InputCase]:
    """An images model's inputs: one 2-D image, or every image in a folder (or its images/),
    each a case named by its file stem."""
    if not path.exists():
        raise AnodiffError(f"{path}: not found")
    if path.is_dir():
        folder = path / "images" if (path / "images").is_dir() else path
        files = [p for p in sorted(folder.iterdir())
                 if p.is_file() and not p.name.startswith(".") and image_format(p)]
        if not files:
            raise AnodiffError(f"{folder}: no images (PNG, JPEG, TIFF, NumPy, NIfTI, DICOM)")
    elif image_format(path) is None:
        raise AnodiffError(f"{path}: not an image anodiff reads")
    else:
        files = [path]
    return [InputCase(image_stem(p), p, {UNNAMED: [p]}) for p in files]


def _source(layout: str, path: Path, name: str, files: CaseFiles) -> Path:
    """The path a user knows a case by: the folder or file given, a case folder, else the
    case's first image."""
    if layout in ("case", "series", "file"):
        return path
    if layout == "cases":
        return path / name
    first = next((p for paths in files.values() for p in paths), path)
    return first.parent if layout == "bids" else first


def load_input_case(
    case: InputCase,
    sequences: Sequence[str] | None,
    *,
    size: int = 64,
    fit: str = "resize",
    normalisation: str = "percentile",
    normalisation_params: dict[str, float] | None = None,
    context: int = 0,
) -> SliceDataset:
    """One input case made into slices exactly as training data is.

    ``size``, ``fit``, ``normalisation`` and ``context`` are as for :func:`open_dataset`; the
    case loaders
    are the training ones, so training and detection cannot drift apart. One difference, on
    purpose: no slice range is pruned. Every slice with foreground is kept so that a map
    covers the whole volume; slices without foreground are left out and come back as 0 from
    ``reassemble``.

    Returns a one-case :class:`SliceDataset` named ``case.name`` (split ``test``, labels 0
    and empty masks: a detection input carries no annotation), whose ``reassemble`` and
    ``reference_image`` put maps back on the input's grid (the first sequence's image).
    """
    if case.missing:
        raise AnodiffError(f"{case.source}: missing sequence(s) {'; '.join(case.missing)}")
    options = slice_options(
        size, fit, normalisation, normalisation_params, ForegroundExtent(0.0), False, context
    )
    if sequences is None:
        if context:
            raise AnodiffError(f"{case.source}: a 2-D image has no neighbouring slices; the "
                               "model takes context slices of volumes")
        channels: list[int] = []

        def load(key: str) -> LoadedCase:
            return load_image(key, case.files[UNNAMED][0], None, 0, channels, options)

        return collect_cases(case.source, [case.name], load, {case.name: "test"}, ("image",),
                             options, "raise")
    names = tuple(sequences)

    def load_volume(key: str) -> LoadedCase:
        return load_case(key, case.files, names, options)

    return collect_cases(case.source, [case.name], load_volume, {case.name: "test"},
                         context_names(names, context), options, "raise")
