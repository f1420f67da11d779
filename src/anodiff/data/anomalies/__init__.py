"""Synthetic anomalies for self-supervised training: Baugh's five tasks and FNDM's masks.

Every task maps a batch (N, C, H, W) in [0, 1] to (corrupted batch, masks (N, H, W)); it
changes only pixels inside its mask, applies the same spatial anomaly to every channel,
clips to [0, 1] and is reproducible from its ``numpy.random.Generator``.

* :mod:`.tasks` — :data:`TASKS` (Baugh 2024, order 0..4), :func:`apply_task`,
  :func:`random_task_corruption` (identity with p = 0.2) and :func:`fold_tasks` (3-of-5);
* :mod:`.shapes` — random sheared, rotated rectangles and ellipses on the foreground;
* :mod:`.poisson` — mixed-gradient Poisson image editing (Pérez 2003);
* :mod:`.blending` — tasks 0 and 1, patches from the same or another source;
* :mod:`.deformation` — tasks 2 and 3, sink and source deformations;
* :mod:`.intensity` — task 4, fractal intensity change, and AnoDDPM-style simplex blobs;
* :mod:`.free_form` — FNDM's free-form brush masks (Yu 2019) and corruption inside.
"""

from anodiff.data.anomalies.blending import other_source_blend, same_source_blend
from anodiff.data.anomalies.deformation import (
    radial_offsets,
    sink_deformation,
    source_deformation,
    warp,
)
from anodiff.data.anomalies.free_form import CORRUPTIONS, corrupt_inside, free_form_masks
from anodiff.data.anomalies.intensity import intensity_change, simplex_blobs
from anodiff.data.anomalies.poisson import mixed_gradient_blend
from anodiff.data.anomalies.shapes import AnomalyShape, sample_shape, sample_shape_masks
from anodiff.data.anomalies.tasks import (
    ALL_TASKS,
    EXTRA_TASKS,
    IDENTITY,
    TASKS,
    TaskFold,
    apply_task,
    draw_task_ids,
    fold_tasks,
    random_task_corruption,
)

__all__ = [
    "ALL_TASKS",
    "CORRUPTIONS",
    "EXTRA_TASKS",
    "IDENTITY",
    "TASKS",
    "AnomalyShape",
    "TaskFold",
    "apply_task",
    "corrupt_inside",
    "draw_task_ids",
    "fold_tasks",
    "free_form_masks",
    "intensity_change",
    "mixed_gradient_blend",
    "other_source_blend",
    "radial_offsets",
    "random_task_corruption",
    "same_source_blend",
    "sample_shape",
    "sample_shape_masks",
    "simplex_blobs",
    "sink_deformation",
    "source_deformation",
    "warp",
]
