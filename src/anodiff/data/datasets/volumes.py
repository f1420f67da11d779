"""Volume datasets: cases of named 3-D sequence images (found by
:func:`anodiff.data.layouts.discover` in any of its layouts: anodiff's case folders,
nnU-Net, BIDS, flat folders, DICOM series), an optional segmentation and
``DATA/splits.csv``; one case becomes its axial slices.

Each sequence volume is normalised on its own, the sequences are stacked as channels,
sliced axially (:mod:`anodiff.data.slicing`: axis from the affine, radiological in-plane
view, range pruning) and fitted to the model size. Every per-case problem (an unreadable or
non-3-D file, a missing sequence, another grid, a segmentation that is not a label map) is
one :class:`~anodiff.errors.AnodiffError` naming the file or case.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from pathlib import Path

import numpy as np

from anodiff.data.datasets.slices import (
    CaseGeometry,
    CaseSource,
    LoadedCase,
    SliceOptions,
    cases_of_splits,
)
from anodiff.data.datasets.tables import read_table
from anodiff.data.io import Image, read_image
from anodiff.data.layouts import SEGMENTATION, CaseFiles, Found, match_sequences, sequence_name
from anodiff.data.normalise import fit_to_size, normalise_intensity
from anodiff.data.slicing import context_names, stack_sequences, take_slices, volume_to_slices
from anodiff.errors import AnodiffError

_AFFINE_TOLERANCE = 1e-3  # mm (and direction cosine units): sequences share one grid


def open_volumes(
    found: Found, sequences: Sequence[str] | None, options: SliceOptions, on_error: str,
    on_missing: str = "raise", only_splits: Collection[str] | None = None,
) -> CaseSource:
    """The cases of the volumes dataset ``found``, not read yet (see
    :func:`anodiff.data.open_dataset`).

    Splits come from ``ROOT/splits.csv`` when there is one, else from the layout (nnU-Net's
    imagesTs is ``test``), else every case is ``train``. Cases that lack one of the
    ``sequences`` (default: every sequence any case has) are an error naming them and the
    file pattern looked for, or with ``on_missing="skip"`` are left out, named in
    ``dataset.skipped`` and logged: the model's inputs never change silently. With
    ``only_splits`` the cases of other splits are not read at all.
    """
    root = found.root
    if (root / "splits.csv").exists() or not found.splits:
        splits, _ = read_table(root / "splits.csv", list(found.cases), "case", with_label=False)
    else:
        splits = {case: found.splits.get(case, "train") for case in found.cases}
    cases = cases_of_splits(root, list(found.cases), splits, only_splits)
    if sequences is None:
        sequences = found.sequences()
        if not sequences:
            raise AnodiffError(f"{root}: no case has a sequence image "
                               f"({found.looked_for('<seq>')})")
    sequences = tuple(sequence_name(s) for s in sequences)
    if SEGMENTATION in sequences:
        raise AnodiffError("'seg' is the segmentation, not a sequence to use as a channel")
    files: dict[str, CaseFiles] = {}
    lacking: dict[str, list[str]] = {}
    for case in cases:
        files[case], lacking[case] = match_sequences(found, case, sequences)
    skipped = [(case, f"missing sequence(s) {missing}") for case, missing in lacking.items()
               if missing]
    if skipped and on_missing == "raise":
        named = "; ".join(f"{case} lacks {lacking[case]}" for case, _ in skipped[:3])
        more = f" and {len(skipped) - 3} more" if len(skipped) > 3 else ""
        raise AnodiffError(
            f"{root}: {len(skipped)} of {len(files)} cases lack a sequence of "
            f"{list(sequences)} ({named}{more}); add the files, choose sequences every case "
            "has (--set data.sequences=[...]) or skip those cases (--set data.on_missing=skip)")
    keep = [case for case in files if not lacking[case]]

    def load(case: str) -> LoadedCase:
        return load_case(case, files[case], sequences, options)

    return CaseSource(root, tuple(keep), load, splits, context_names(sequences, options.context),
                      options, on_error, tuple(skipped))


def _only(case: str, sequence: str, files: CaseFiles) -> Path:
    paths = files[sequence]
    if len(paths) > 1:
        names = ", ".join(p.name for p in paths)
        raise AnodiffError(f"case {case}: several files for sequence '{sequence}' ({names})")
    return paths[0]


def load_case(
    case: str, files: CaseFiles, sequences: tuple[str, ...], options: SliceOptions
) -> LoadedCase:
    """The slices of one case from its ``{sequence or "seg": paths}`` (see
    :func:`~anodiff.data.layouts.match_sequences`)."""
    missing = [s for s in sequences if s not in files]
    if missing:
        raise AnodiffError(f"case {case}: missing sequence(s) {missing} (has {sorted(files)})")
    images = {s: _read_volume(_only(case, s, files)) for s in sequences}
    first = images[sequences[0]]
    for image in images.values():
        _check_same_grid(first, image)
    seg = _read_volume(_only(case, SEGMENTATION, files)) if SEGMENTATION in files else None
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
    if not foreground.any():
        raise AnodiffError(f"{first.path}: no foreground (every voxel is "
                           f"{float(first.array.flat[0]):g}); nothing to analyse")
    slices, layout = volume_to_slices(
        stack_sequences(normalised, sequences), first.affine, options.keep, foreground,
        options.context,
    )
    if len(layout.indices) == 0:
        raise AnodiffError(f"case {case}: no slice left after pruning ({options.keep})")
    lesion = seg.array > 0 if seg is not None else np.zeros(first.array.shape, dtype=bool)
    mask_slices = take_slices(lesion, layout)
    return LoadedCase(
        images=fit_to_size(slices, options.size, options.fit),
        masks=fit_to_size(mask_slices, options.size, options.fit),
        labels=mask_slices.any(axis=(1, 2)).astype(np.int64),
        indices=layout.indices.astype(np.int64),
        geometry=CaseGeometry(first.path, first.spatial_shape, layout.plane_shape, layout,
                              first.spacing),
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
