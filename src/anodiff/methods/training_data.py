"""What a method may train and calibrate on (design brief, "who may use what").

* :func:`training_images` — the train-split slices of a supervision regime (healthy ones for
  unsupervised and self-supervised methods, all with image labels for weakly supervised
  ones), from a dataset, a list of items or a tensor of healthy images;
* :func:`labelled_training_images` — the weak regime's slices with both classes present;
* :func:`segmentation_training_data` — the supervised regime's slices with their masks;
* :func:`labelled_training_data` — the semi-supervised regime's slices, ``k`` of them with
  masks;
* :func:`split_validation` — healthy validation slices for early stopping or a calibration
  that must happen during training (held out of training when the dataset has no ``val``
  split);
* :func:`calibration_images` — healthy validation slices for the calibration after
  training (:meth:`anodiff.methods.base.Detector.calibrate`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from anodiff.data.datasets import UNLABELLED
from anodiff.data.picking import one_per_case_in_turn
from anodiff.errors import AnodiffError

HEALTHY_ONLY = ("unsupervised", "self")  # the regimes that train on healthy slices only


def training_images(data: Any, regime: str, with_labels: bool = False
                    ) -> tuple[Tensor, Tensor | None]:
    """Stack the images (N, C, H, W) a method of ``regime`` may train on, and their labels.

    ``data`` is a dataset with ``for_regime`` (design brief, "who may use what": unsupervised
    and self-supervised methods see healthy train slices only, weakly supervised ones all
    train slices with image labels), or any indexable of dicts with ``image`` (and
    ``label``; the healthy-only regimes then get the items labelled 0 or unlabelled), or a
    (N, C, H, W) tensor of healthy images.
    """
    if isinstance(data, Tensor | np.ndarray):
        return torch.as_tensor(data, dtype=torch.float32), None
    if hasattr(data, "for_regime"):
        data = data.for_regime(regime)
    if len(data) == 0:
        raise AnodiffError(f"no training slices for a {regime} method in this dataset")
    if hasattr(data, "images") and hasattr(data, "labels"):  # SliceDataset, ArrayDataset
        images = torch.as_tensor(data.images, dtype=torch.float32)
        raw_labels = data.labels
    else:  # items: a method that must not see anomalies gets the healthy (or unlabelled) ones
        items = [data[i] for i in range(len(data))]
        if regime in HEALTHY_ONLY:
            items = [item for item in items if int(item.get("label", 0)) == 0]
        if not items:
            raise AnodiffError(f"no healthy training slices for a {regime} method")
        images = torch.stack([torch.as_tensor(item["image"], dtype=torch.float32)
                              for item in items])
        raw_labels = [int(item["label"]) for item in items] if with_labels else None
    labels = None
    if with_labels:
        if raw_labels is None:
            raise AnodiffError("this method needs image labels (0 healthy, 1 anomalous)")
        labels = torch.as_tensor(raw_labels, dtype=torch.long)
    return images, labels


def labelled_training_images(name: str, data: Any) -> tuple[Tensor, Tensor]:
    """All train slices with their image labels (weak supervision), both classes required."""
    images, labels = training_images(data, "weak", with_labels=True)
    if labels is None:
        raise AnodiffError(f"{name} is weakly supervised: it needs image labels (a dataset, or "
                           "items with 'image' and 'label'), not a bare image array")
    present = set(labels.unique().tolist())
    if present != {0, 1}:
        raise AnodiffError(f"{name}: training needs healthy (0) and anomalous (1) slices; "
                           f"the labels present are {sorted(present)}")
    return images, labels


def segmentation_training_data(name: str, data: Any, labelled: int | None = None,
                               seed: int = 0) -> tuple[Tensor, Tensor]:
    """The train slices with their lesion masks, for a supervised method (design brief:
    only supervised methods may use train-split masks as pixel targets): images
    (N, C, H, W) and masks (N, H, W) bool, healthy slices (empty masks) included.

    ``data`` is a dataset or an indexable of dicts with ``image`` and ``mask``. Training
    data without a single lesion pixel is an error that says where masks are read from.
    ``labelled``: train on that many slices only, the very ones the semi-supervised regime
    would label with the same ``seed`` (:func:`labelled_training_data`), so that a
    supervised baseline and a semi-supervised method see the same masks.
    """
    if labelled is not None:
        picked = labelled_training_data(name, data, labelled, seed)
        return picked.images[picked.rows], picked.masks
    if hasattr(data, "for_regime"):
        train = data.for_regime("supervised")
        images, masks = torch.as_tensor(train.images), torch.as_tensor(train.masks)
    else:
        images, masks = _items_with_masks(name, data)
    if len(images) == 0:
        raise AnodiffError(f"{name}: no training slices in this dataset")
    if not masks.any():
        raise AnodiffError(f"{name} is supervised: it trains on lesion masks, and no training "
                           f"slice has a lesion pixel ({MASK_PLACES})")
    return images.float(), masks.bool()


MASK_PLACES = "volumes: DATA/<case>/<case>_seg.nii.gz; images: DATA/masks/<id>.<ext>; " \
              "nnU-Net: labelsTr/"


@dataclass(frozen=True)
class LabelledSlices:
    """The semi-supervised regime's training data: every train slice (``images``, N), the
    ``rows`` of the labelled ones among them (k), their ``masks`` (k, H, W) and ``names``
    (``case:slice`` for a dataset, the item's index otherwise), which a run records."""

    images: Tensor
    rows: Tensor
    masks: Tensor
    names: list[str]


def labelled_training_data(name: str, data: Any, labelled: int, seed: int) -> LabelledSlices:
    """All train slices, and masks for exactly ``labelled`` of them (design brief: the semi
    regime's "masks of exactly k seeded, recorded train slices").

    The labelled slices are slices with a lesion, picked one case at a time in a seeded
    order (:meth:`~anodiff.data.SliceDataset.labelled_rows`); the other slices come without
    label or mask. ``data`` is a dataset, or items with ``image`` and, for the candidates
    to label, ``mask`` (``case`` groups them; otherwise each item is its own case).
    """
    if labelled < 1:
        raise AnodiffError(f"{name}: labelled must be >= 1, got {labelled}")
    if hasattr(data, "for_regime"):
        semi = data.for_regime("semi", labelled=labelled, seed=seed)
        rows = np.flatnonzero(semi.labels != UNLABELLED)
        names = [f"{semi.cases[r]}:{semi.indices[r]}" for r in rows]
        return LabelledSlices(torch.as_tensor(semi.images, dtype=torch.float32),
                              torch.from_numpy(rows), torch.as_tensor(semi.masks[rows]), names)
    if isinstance(data, Tensor | np.ndarray):
        raise AnodiffError(f"{name} needs the masks of {labelled} slices; give a dataset (or "
                           "items with 'image' and, for some, 'mask'), not a bare image array")
    items = [data[i] for i in range(len(data))]
    if not items:
        raise AnodiffError(f"{name}: no training slices")
    images = torch.stack([torch.as_tensor(item["image"], dtype=torch.float32)
                          for item in items])
    candidates = np.array([i for i, item in enumerate(items)
                           if "mask" in item and bool(torch.as_tensor(item["mask"]).any())])
    if labelled > len(candidates):
        raise AnodiffError(f"{name}: {labelled} labelled slices asked for, but only "
                           f"{len(candidates)} items have a mask with a lesion")
    cases = np.array([str(items[i].get("case", i)) for i in candidates])
    rows = candidates[one_per_case_in_turn(cases, labelled, seed)]
    masks = torch.stack([torch.as_tensor(items[i]["mask"]).bool() for i in rows])
    return LabelledSlices(images, torch.from_numpy(rows), masks, [str(i) for i in rows])


def _items_with_masks(name: str, data: Any) -> tuple[Tensor, Tensor]:
    """Images and masks of items that must all have a mask (the supervised regime)."""
    if isinstance(data, Tensor | np.ndarray):
        raise AnodiffError(f"{name} is supervised: it trains on lesion masks; give a dataset "
                           "(or items with 'image' and 'mask'), not a bare image array")
    items = [data[i] for i in range(len(data))]
    if any("mask" not in item for item in items):
        raise AnodiffError(f"{name} is supervised: every item needs a 'mask' (H, W)")
    images = torch.stack([torch.as_tensor(item["image"], dtype=torch.float32)
                          for item in items]) if items else torch.zeros(0)
    masks = torch.stack([torch.as_tensor(item["mask"]).bool() for item in items]) \
        if items else torch.zeros(0, dtype=torch.bool)
    return images, masks


def split_validation(name: str, data: Any, healthy: Tensor, count: int, seed: int
                     ) -> tuple[Tensor, Tensor]:
    """(training images, validation images) from healthy slices, for early stopping or
    calibration on images the fitted part has not seen.

    The healthy slices of the dataset's ``val`` split when it has any (at most ``count``,
    a seeded random pick); otherwise ``count`` (at most a fifth) of the healthy training
    slices are held out of training.
    """
    generator = torch.Generator().manual_seed(seed)
    if hasattr(data, "for_regime"):
        val = data.for_regime("self", split="val")
        if len(val):
            images = torch.as_tensor(val.images, dtype=torch.float32)
            return healthy, images[torch.randperm(len(images), generator=generator)[:count]]
    held = min(count, len(healthy) // 5)
    if held < 1:
        raise AnodiffError(f"{name} needs healthy validation slices; give a dataset with a "
                           "val split or at least 5 healthy training slices")
    order = torch.randperm(len(healthy), generator=generator)
    return healthy[order[held:]], healthy[order[:held]]


def calibration_images(data: Any, count: int, seed: int) -> tuple[Tensor, np.ndarray]:
    """Up to ``count`` healthy slices (N, C, H, W) to calibrate on after training, and the
    case each comes from (N,).

    The healthy slices of the dataset's ``val`` split when it has any; otherwise (also for
    a list of items or a tensor of healthy images) the healthy training slices. Without
    case ids (items, tensors) every image is a case of its own. The pick takes one slice
    of every case in turn, the cases and each case's slices in a seeded random order, so
    the calibration is reproducible and every case it covers has about as many slices:
    what a per-case calibration (:meth:`~anodiff.methods.base.Detector.calibrate`'s case
    threshold) needs.
    """
    images, cases = None, None
    if hasattr(data, "for_regime"):
        val = data.for_regime("self", split="val")
        if len(val) == 0:
            val = data.for_regime("self")
        images, cases = torch.as_tensor(val.images, dtype=torch.float32), val.cases
    elif isinstance(data, Tensor | np.ndarray):
        images = torch.as_tensor(data, dtype=torch.float32)
    else:  # items: the healthy ones (an item without a label counts as healthy)
        items = [item for item in (data[i] for i in range(len(data)))
                 if int(item.get("label", 0)) == 0]
        images = torch.stack([torch.as_tensor(item["image"], dtype=torch.float32)
                              for item in items]) if items else torch.zeros(0)
        if items and all("case" in item for item in items):
            cases = [str(item["case"]) for item in items]
    if len(images) == 0:
        raise AnodiffError("no healthy slices to calibrate the mask threshold on")
    cases = np.arange(len(images)).astype(str) if cases is None else np.asarray(cases)
    picked = one_per_case_in_turn(cases, count, seed)
    return images[torch.from_numpy(picked)], cases[picked]
