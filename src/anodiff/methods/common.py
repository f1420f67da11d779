"""Small pieces every method needs: its training images per supervision regime, healthy
validation slices, the brain foreground, image scores from maps, and a healthy-calibrated
threshold."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from anodiff.errors import AnodiffError


def training_images(data: Any, regime: str, with_labels: bool = False
                    ) -> tuple[Tensor, Tensor | None]:
    """Stack the images (N, C, H, W) a method of ``regime`` may train on, and their labels.

    ``data`` is a dataset with ``for_regime`` (design brief, "who may use what": unsupervised
    and self-supervised methods see healthy train slices only, weakly supervised ones all
    train slices with image labels), or any indexable of dicts with ``image`` (and
    ``label``), or a (N, C, H, W) tensor of healthy images.
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
    else:
        items = [data[i] for i in range(len(data))]
        images = torch.stack([torch.as_tensor(item["image"], dtype=torch.float32)
                              for item in items])
        raw_labels = [int(item["label"]) for item in items] if with_labels else None
    labels = None
    if with_labels:
        if raw_labels is None:
            raise AnodiffError("this method needs image labels (0 healthy, 1 anomalous)")
        labels = torch.as_tensor(raw_labels, dtype=torch.long)
    return images, labels


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


def foreground(images: Tensor) -> Tensor:
    """Brain foreground (N, H, W): pixels above the image minimum in any channel.

    The convention of the UPD study (Lagogiannis et al.): skull-stripped MRI has a constant
    background at its minimum.
    """
    flat_min = images.flatten(2).min(-1).values[..., None, None]
    return (images > flat_min).any(1)


def image_scores(maps: Tensor, fg: Tensor, percentile: float) -> Tensor:
    """Image score = the ``percentile`` of the map inside the foreground (0 if none)."""
    scores = torch.zeros(maps.shape[0])
    for i in range(maps.shape[0]):
        values = maps[i][fg[i]]
        if values.numel():
            scores[i] = torch.quantile(values.float(), percentile / 100)
    return scores


def healthy_threshold(maps: Tensor, fg: Tensor, fpr: float) -> float:
    """The map value exceeded by a fraction ``fpr`` of healthy foreground pixels."""
    values = maps[fg].float()
    if values.numel() == 0:
        raise AnodiffError("cannot calibrate a threshold: the healthy images have no foreground")
    values = values[torch.randperm(values.numel(), generator=torch.Generator().manual_seed(0))
                    [:2_000_000]]  # quantile over at most 2 M pixels (torch's limit is 16 M)
    return float(torch.quantile(values, 1 - fpr))
