"""A toy weakly labelled problem shared by the diffano and counterfactual tests."""

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
