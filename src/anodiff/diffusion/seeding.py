"""Seeded blocks that leave the caller's random state as they found it.

anodiff's own randomness (noise, levels, label dropout, sampling) is drawn from
``torch.Generator`` objects that a trainer or a detector owns and seeds. Two things cannot
take a generator: the weight initialisation of MONAI's networks and the dropout / VAE
reparameterisation inside a training step, which draw from torch's global generator. They
run inside :func:`seeded`, which forks the global state (``torch.random.fork_rng``), seeds
the fork and restores the caller's state afterwards: results are reproducible from the
method's seed, and a user's own ``torch.manual_seed`` stream is never disturbed.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def seeded(seed: int, device: torch.device | str | None = None) -> Iterator[None]:
    """Run the block with torch's global generators (CPU, and ``device``'s when it is a
    GPU) seeded with ``seed``; the caller's states are restored when it ends."""
    device = torch.device(device) if device is not None else torch.device("cpu")
    gpus = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=gpus, device_type=device.type if gpus else "cuda"):
        torch.manual_seed(seed)
        yield
