"""The images layout: ``DATA/images/<id>.<ext>``, optional ``DATA/masks/<id>.<ext>`` and
``DATA/labels.csv``; one 2-D image (grey: 1 channel, RGB: 3) becomes one slice.

An empty label cell means "from the mask"; an image with neither a label nor a mask is
refused, as is a mask of another shape than its image or an image with another channel
count than the first one read.
"""

from __future__ import annotations

from collections.abc import Collection
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
from anodiff.data.io import Image, image_format, image_stem, read_image
from anodiff.data.normalise import fit_to_size, normalise_intensity
from anodiff.errors import AnodiffError


def open_images(root: Path, options: SliceOptions, on_error: str,
                only_splits: Collection[str] | None = None) -> CaseSource:
    """The images of the 2-D images dataset at ``root``, not read yet (see
    :func:`anodiff.data.open_dataset`); with ``only_splits`` only those of these splits."""
    images = _id_files(root / "images")
    if not images:
        raise AnodiffError(f"{root / 'images'}: no images")
    masks = _id_files(root / "masks") if (root / "masks").is_dir() else {}
    orphans = sorted(set(masks) - set(images))
    if orphans:
        raise AnodiffError(f"{root / 'masks'}: masks without an image: {orphans[:5]}")
    splits, labels = read_table(root / "labels.csv", list(images), "id", with_label=True)
    channels: list[int] = []

    def load(key: str) -> LoadedCase:
        return load_image(key, images[key], masks.get(key), labels.get(key), channels, options)

    chosen = cases_of_splits(root, list(images), splits, only_splits,
                             "labels.csv: id,label,split")
    return CaseSource(root, tuple(chosen), load, splits, ("image",), options, on_error)


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


def load_image(
    key: str,
    path: Path,
    mask_path: Path | None,
    label: int | None,
    channels: list[int],
    options: SliceOptions,
) -> LoadedCase:
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
    return LoadedCase(
        images=fit_to_size(normalised[None], options.size, options.fit),
        masks=fit_to_size(lesion[None], options.size, options.fit),
        labels=np.array([lesion.any() if label is None else label], dtype=np.int64),
        indices=np.zeros(1, dtype=np.int64),
        geometry=CaseGeometry(path, image.spatial_shape, lesion.shape, None),
    )


def _as_plane(image: Image) -> np.ndarray:
    """A 2-D image (H, W) or (H, W, 3); a volume with one singleton axis counts as 2-D."""
    spatial = image.spatial_shape
    if len(spatial) == 3 and spatial.count(1) == 1:
        return image.array.reshape([s for s in spatial if s != 1])
    if len(spatial) != 2:
        raise AnodiffError(f"{image.path}: expected a 2-D image, got shape {image.array.shape}")
    return image.array


