"""Training pairs for restoration models: (healthy target, the same image corrupted).

Baugh 2024 train an image-conditioned diffusion model to map an image corrupted by a
synthetic task back to its healthy self. :class:`CorruptedPairs` makes those pairs on
demand: item ``i`` is image ``i mod N`` corrupted as :func:`~.tasks.random_task_corruption`
would (no task with probability 0.2, else one of the fold's tasks), with randomness drawn
from a generator seeded by ``(*seed, i)``. So every item is a fresh corruption, yet the whole
sequence is a pure function of the seed, which the training loop's exact resume needs; and
a training run of ``steps x batch`` draws can be given exactly that many distinct pairs.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from anodiff.data.anomalies._common import check_images
from anodiff.data.anomalies.blending import blend_patches_from
from anodiff.data.anomalies.tasks import (
    ALL_TASKS,
    IDENTITY,
    IDENTITY_PROBABILITY,
    apply_task,
    draw_task_ids,
)
from anodiff.errors import AnodiffError


class CorruptedPairs:
    """``length`` restoration pairs over the healthy ``images`` (N, C, H, W) in [0, 1].

    Items are dicts with ``image`` (the healthy target) and ``cond`` (its corrupted copy),
    float32 tensors, mapped to [-1, 1] when ``signed`` (the diffusion models' range).
    :meth:`corrupt` gives the numpy pair with its mask and task id. Images without
    foreground (constant slices) cannot hold an anomaly and are left out; ``kept`` lists
    the rows used.
    """

    def __init__(
        self,
        images: np.ndarray,
        tasks: Sequence[str],
        *,
        length: int,
        seed: int | tuple[int, ...] = 0,
        identity_probability: float = IDENTITY_PROBABILITY,
        other_source: np.ndarray | None = None,
        signed: bool = False,
    ) -> None:
        check_images(images)
        draw_task_ids(1, tasks, rng=np.random.default_rng(0),
                      identity_probability=identity_probability)  # validates both
        if length < 1:
            raise AnodiffError(f"CorruptedPairs: length must be >= 1, got {length}")
        if "other_source_blend" in tasks and other_source is None:
            raise AnodiffError("task 'other_source_blend' needs other_source images")
        lowest = images.min(axis=(1, 2, 3), keepdims=True)
        self.kept = np.flatnonzero((images > lowest).any(axis=(1, 2, 3)))
        if "same_source_blend" in tasks and len(self.kept) < 2:
            raise AnodiffError("task 'same_source_blend' needs at least 2 images with foreground")
        if len(self.kept) == 0:
            raise AnodiffError("CorruptedPairs: no image has a foreground to corrupt")
        self.images = images[self.kept]
        self.tasks, self.length = tuple(tasks), length
        self.seed = (seed,) if isinstance(seed, int) else tuple(seed)
        self.identity_probability, self.other_source = identity_probability, other_source
        self.signed = signed

    def __len__(self) -> int:
        return self.length

    def corrupt(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
        """Item ``index`` as numpy: (target (C, H, W), corrupted, mask (H, W), task id)."""
        if not 0 <= index < self.length:
            raise IndexError(f"pair {index} out of range [0, {self.length})")
        rng = np.random.default_rng([*self.seed, index])
        n = len(self.images)
        row = index % n
        target = self.images[row : row + 1]
        task_id = int(draw_task_ids(1, self.tasks, rng=rng,
                                    identity_probability=self.identity_probability)[0])
        if task_id == IDENTITY:
            return target[0], target[0].copy(), np.zeros(target.shape[2:], bool), task_id
        task = ALL_TASKS[task_id]
        if task == "same_source_blend":
            partner = (row + int(rng.integers(1, n))) % n
            out, mask = blend_patches_from(target, self.images[partner : partner + 1], rng=rng)
        else:
            out, mask = apply_task(task, target, rng=rng, other_source=self.other_source)
        return target[0], out[0], mask[0], task_id

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        target, corrupted, _, _ = self.corrupt(index)
        pair = {"image": torch.from_numpy(np.ascontiguousarray(target)),
                "cond": torch.from_numpy(np.ascontiguousarray(corrupted))}
        if self.signed:
            pair = {key: value * 2 - 1 for key, value in pair.items()}
        return pair

    def stacked(self) -> tuple[Tensor, Tensor]:
        """All items at once: (targets, conditions), each (length, C, H, W)."""
        items = [self[i] for i in range(self.length)]
        return (torch.stack([item["image"] for item in items]),
                torch.stack([item["cond"] for item in items]))
