"""A toy a threshold cannot solve, for the supervised methods: the lesion is a shape, not
an intensity."""

import numpy as np
import torch

SIZE = 24


def squares_and_discs(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Grey 'brains' with a bright square (the lesion, in the mask) and a bright disc of
    the same intensity and area (not a lesion): an intensity threshold flags both."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    images = np.zeros((n, 1, SIZE, SIZE), np.float32)
    masks = np.zeros((n, SIZE, SIZE), bool)
    for i in range(n):
        images[i, 0, 2:-2, 2:-2] = 0.4 + 0.02 * rng.normal(size=(SIZE - 4, SIZE - 4))
        top, left = rng.integers(3, 8, 2)
        masks[i, top:top + 5, left:left + 5] = True
        cy, cx = rng.integers(14, 19, 2)
        disc = np.hypot(yy - cy, xx - cx) < 2.8
        images[i, 0, masks[i] | disc] = 0.9
    return torch.from_numpy(images), torch.from_numpy(masks)
