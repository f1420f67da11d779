"""Seeded picks of slices spread over cases: calibration slices, and the labelled slices
of the semi-supervised regime.

A pick that takes slices in plain random order draws most of them from the cases with
the most slices; here every case gives one slice before any gives a second, so a small
pick covers as many cases (patients, scanners) as it can, and a seed makes it
reproducible.
"""

from __future__ import annotations

import numpy as np
import torch


def one_per_case_in_turn(cases: np.ndarray, count: int, seed: int) -> np.ndarray:
    """Indices of up to ``count`` of the rows ``cases`` (one case id per row), round-robin
    over the cases: in a seeded random permutation, every case's first slice comes before
    any case's second, and so on."""
    cases = np.asarray(cases)
    order = torch.randperm(len(cases), generator=torch.Generator().manual_seed(seed)).numpy()
    seen: dict[str, int] = {}
    rank = np.empty(len(cases), dtype=np.int64)
    for i in order:
        rank[i] = seen.get(cases[i], 0)
        seen[cases[i]] = rank[i] + 1
    position = np.empty(len(cases), dtype=np.int64)
    position[order] = np.arange(len(cases))
    return np.lexsort((position, rank))[:count]
