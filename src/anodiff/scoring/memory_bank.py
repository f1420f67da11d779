"""A PatchCore-style memory bank of healthy patch features (Roth 2022).

FNDM (Li 2023) makes its coarse segmentation condition ``x_seg`` from "a memory bank
[that stores] representative features of healthy samples": every patch of a test image is
scored by the distance of its feature vector to the nearest feature in the bank. As in
PatchCore, the bank is a greedy k-centre *coreset* of all healthy patch features (each new
centre is the feature farthest from the centres chosen so far, so the bank covers the
healthy feature space with few entries), computed on a random projection of the features
to keep it cheap. scikit-learn has no k-centre coreset, so it is written here (a dozen
lines); nearest-neighbour distances are exact (``torch.cdist`` in chunks).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from anodiff.errors import AnodiffError

_CHUNK = 4096  # query rows per distance block: bounds memory at chunk x bank floats


def greedy_coreset(features: Tensor, size: int, *, projection_dim: int = 128, seed: int = 0
                   ) -> Tensor:
    """Indices of ``size`` rows of ``features`` (P, D) chosen by greedy k-centre selection.

    Distances are measured after a Gaussian random projection to ``projection_dim``
    dimensions (PatchCore's speed-up; the identity when D is already small). The first
    centre is a seeded random row.
    """
    if features.dim() != 2 or len(features) == 0:
        raise AnodiffError(f"coreset: features must be a non-empty (P, D) tensor, got "
                           f"{tuple(features.shape)}")
    if size < 1:
        raise AnodiffError(f"coreset: size must be >= 1, got {size}")
    size = min(size, len(features))
    generator = torch.Generator().manual_seed(seed)
    x = features.float()
    if x.shape[1] > projection_dim:
        projection = torch.randn(x.shape[1], projection_dim, generator=generator)
        x = x @ projection / projection_dim**0.5
    chosen = torch.empty(size, dtype=torch.long)
    chosen[0] = int(torch.randint(len(x), (1,), generator=generator))
    nearest = (x - x[chosen[0]]).square().sum(1)
    for k in range(1, size):
        chosen[k] = int(nearest.argmax())
        nearest = torch.minimum(nearest, (x - x[chosen[k]]).square().sum(1))
    return chosen


class MemoryBank(nn.Module):
    """Healthy patch features (M, D), a buffer (``features``), and the distance of query
    features to the nearest one. Empty until :meth:`fit`; moves with ``.to(device)``."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("features", torch.zeros(0, 0))

    def fit(self, features: Tensor, size: int, *, seed: int = 0) -> MemoryBank:
        """Hold the coreset of ``size`` entries of healthy ``features`` (P, D)."""
        chosen = features[greedy_coreset(features, size, seed=seed)].float()
        self.features = chosen.to(self.features.device)
        return self

    def distances(self, queries: Tensor) -> Tensor:
        """Euclidean distance (Q,) of every query row (Q, D) to its nearest bank entry."""
        bank = self.features
        if len(bank) == 0:
            raise AnodiffError("the memory bank is empty: fit it first")
        if queries.dim() != 2 or queries.shape[1] != bank.shape[1]:
            raise AnodiffError(f"queries must be (Q, {bank.shape[1]}), got "
                               f"{tuple(queries.shape)}")
        out = [torch.cdist(chunk.float(), bank).min(1).values
               for chunk in queries.to(bank.device).split(_CHUNK)]
        return torch.cat(out) if out else queries.new_zeros(0)
