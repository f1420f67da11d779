"""The toy problem the method tests share: two-channel 'brains' with an optional bright blob.

Training data: 50 healthy and 50 lesioned labelled slices with masks; a method takes what
its regime may use (the weakly supervised ones all with labels, the supervised ones all
with masks, the others the healthy ones).
"""

from pathlib import Path

import numpy as np
import torch

import anodiff

SIZE = 24


def toy_slices(n: int, lesion: bool, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, 2, SIZE, SIZE) discs with an inner 'ventricle'; optional bright blob (r = 3)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    images = np.zeros((n, 2, SIZE, SIZE), np.float32)
    truth = np.zeros((n, SIZE, SIZE), bool)
    for i in range(n):
        r = np.hypot(yy - SIZE / 2 + rng.normal(0, 0.5), xx - SIZE / 2 + rng.normal(0, 0.5))
        brain, inner = r < SIZE * 0.42, r < SIZE * 0.22
        images[i, :, brain] = (0.5, 0.4)
        images[i, :, inner] = (0.3, 0.6)
        images[i] += brain * 0.02 * rng.normal(size=(2, SIZE, SIZE))
        if lesion:
            cy, cx = rng.integers(SIZE // 3, 2 * SIZE // 3 + 1, 2)
            truth[i] = np.hypot(yy - cy, xx - cx) < 3
            images[i, :, truth[i]] = 0.95
    return torch.from_numpy(images.clip(0, 1)), torch.from_numpy(truth)


def residual(images: torch.Tensor, result: anodiff.AnomalyResult) -> torch.Tensor:
    return (images - result.pseudo_healthy).abs().sum(1)


def toy_training_items() -> list[dict]:
    """50 healthy and 50 lesioned labelled toy slices, with their masks (which only the
    supervised methods read)."""
    healthy, empty = toy_slices(50, False, seed=0)
    anomalous, truth = toy_slices(50, True, seed=1)
    return [{"image": x, "label": 0, "mask": m} for x, m in zip(healthy, empty, strict=True)] + \
        [{"image": x, "label": 1, "mask": m} for x, m in zip(anomalous, truth, strict=True)]


def fit_on_toys(method: str, run_dir: Path | None, **settings) -> anodiff.Detector:
    """``method`` (quick preset, with ``settings``) trained single-threaded on the toy items."""
    torch.set_num_threads(1)
    det = anodiff.create(method, preset="quick", **settings)
    det.run_dir = run_dir
    return det.fit(toy_training_items())


def toy_test_images() -> dict[str, torch.Tensor]:
    """8 healthy and 8 lesioned test slices (unseen seeds) with the lesions' masks."""
    anomalous, truth = toy_slices(8, True, seed=3)
    return {"healthy": toy_slices(8, False, seed=2)[0], "anomalous": anomalous, "truth": truth}
