"""The PatchCore memory bank: the greedy coreset covers every cluster, distances are exact."""

import numpy as np
import pytest
import torch
from sklearn.neighbors import NearestNeighbors

from anodiff.errors import AnodiffError
from anodiff.scoring.memory_bank import MemoryBank, greedy_coreset


def test_greedy_coreset_takes_one_point_of_every_far_cluster_first() -> None:
    gen = torch.Generator().manual_seed(0)
    centres = torch.eye(6) * 100.0
    points = (centres[:, None] + torch.randn(6, 50, 6, generator=gen)).reshape(-1, 6)
    chosen = greedy_coreset(points, 6, seed=3)
    assert sorted((chosen // 50).tolist()) == list(range(6))
    assert len(greedy_coreset(points, 1000)) == len(points)  # never more than the points


def test_distances_match_scikit_learn_nearest_neighbours() -> None:
    gen = torch.Generator().manual_seed(1)
    bank, queries = torch.randn(300, 200, generator=gen), torch.randn(5000, 200, generator=gen)
    memory = MemoryBank()
    memory.features = bank
    ours = memory.distances(queries).numpy()
    reference = NearestNeighbors(n_neighbors=1).fit(bank.numpy()).kneighbors(queries.numpy())[0]
    assert np.allclose(ours, reference[:, 0], rtol=1e-4, atol=1e-4)
    fitted = MemoryBank().fit(bank, 300)
    assert fitted.state_dict()["features"].shape == (300, 200)
    # every point is in a full coreset: its distance is 0 up to cdist's matrix-product
    # rounding (~0.01 here), against typical distances of ~20 between these points
    assert float(fitted.distances(bank).max()) < 0.05


def test_bad_shapes_are_named() -> None:
    with pytest.raises(AnodiffError, match="empty"):
        MemoryBank().distances(torch.zeros(2, 4))
    with pytest.raises(AnodiffError, match="queries"):
        MemoryBank().fit(torch.rand(3, 4), 3).distances(torch.zeros(2, 5))
    with pytest.raises(AnodiffError, match="size"):
        greedy_coreset(torch.zeros(3, 4), 0)
