"""The lesion table of one case: every connected component of its mask, measured on the
input's own grid, so that a reader can go from a row to the lesion in any viewer (the review,
Sec. 6.4: maps help only where a radiologist can check them).

Components are found with ``scipy.ndimage.label`` at full connectivity (26 neighbours in
3-D, 8 in 2-D), as :func:`anodiff.evaluation.metrics.lesion_detection` counts lesions, and
measured with scipy's labelled reductions: nothing here is written by hand but the columns.

- ``volume_ml``: voxels x the voxel volume, |det| of the affine's 3 x 3 part (spacing and
  any shear of the file's grid) / 1000; empty for 2-D images, which have no thickness.
- ``centroid_{r,a,s}_mm``: the affine applied to the component's mean voxel index: world
  RAS+ millimetres, the convention of nibabel and of anodiff's DICOM reader (a DICOM viewer
  shows LPS: negate R and A); empty for 2-D images.
- ``centroid_{i,j,k}`` and ``box_{i,j,k}_{min,max}``: voxel indices (0-based, inclusive)
  along the axes of the file's array, as ITK-SNAP's and NiiVue's voxel coordinates count.
- ``peak_map``, ``mean_map``: the anomaly map inside the component; ``mean_uncertainty``
  where the method has an uncertainty.

Rows are ordered by size, largest first; ``lesion`` numbers them from 1 in that order.
"""

from __future__ import annotations

import csv
import io
from typing import Any

import numpy as np
from scipy import ndimage

from anodiff.errors import AnodiffError

AXES = ("i", "j", "k")
LESION_COLUMNS = (
    "lesion", "voxels", "volume_ml", "centroid_r_mm", "centroid_a_mm", "centroid_s_mm",
    *(f"centroid_{a}" for a in AXES),
    *(f"box_{a}_{end}" for a in AXES for end in ("min", "max")),
    "peak_map", "mean_map", "mean_uncertainty",
)


def lesion_table(mask: np.ndarray, anomaly_map: np.ndarray, affine: np.ndarray,
                 uncertainty: np.ndarray | None = None) -> list[dict[str, Any]]:
    """One row per connected component of ``mask`` (a 3-D volume or a 2-D image on the grid
    of ``affine``, voxel index -> RAS+ mm), largest first (module docstring)."""
    mask = np.asarray(mask, dtype=bool)
    for name, values in (("anomaly map", anomaly_map), ("uncertainty", uncertainty)):
        if values is not None and np.shape(values) != mask.shape:
            raise AnodiffError(f"lesion table: the {name} has shape {np.shape(values)}, the "
                               f"mask {mask.shape}")
    if mask.ndim not in (2, 3):
        raise AnodiffError(f"lesion table: expected a 2-D or 3-D mask, got shape {mask.shape}")
    labels, count = ndimage.label(mask, np.ones((3,) * mask.ndim, dtype=bool))
    if count == 0:
        return []
    index = np.arange(1, count + 1)
    voxels = np.bincount(labels.ravel(), minlength=count + 1)[1:]
    centres = np.asarray(ndimage.center_of_mass(mask, labels, index), dtype=float)
    boxes = ndimage.find_objects(labels)
    peak = ndimage.maximum(anomaly_map, labels, index)
    mean = ndimage.mean(anomaly_map, labels, index)
    spread = None if uncertainty is None else ndimage.mean(uncertainty, labels, index)
    volumetric = mask.ndim == 3
    voxel_ml = abs(float(np.linalg.det(affine[:3, :3]))) / 1000.0 if volumetric else None
    world = centres @ affine[:3, :3].T + affine[:3, 3] if volumetric else None
    rows = []
    for rank, c in enumerate(sorted(range(count), key=lambda c: (-voxels[c], c)), start=1):
        row: dict[str, Any] = {"lesion": rank, "voxels": int(voxels[c]),
                               "volume_ml": None if voxel_ml is None else voxels[c] * voxel_ml}
        for axis, name in enumerate(("r", "a", "s")):
            row[f"centroid_{name}_mm"] = None if world is None else float(world[c, axis])
        for axis, name in enumerate(AXES):
            inside = axis < mask.ndim
            row[f"centroid_{name}"] = float(centres[c, axis]) if inside else None
            row[f"box_{name}_min"] = boxes[c][axis].start if inside else None
            row[f"box_{name}_max"] = boxes[c][axis].stop - 1 if inside else None
        row.update(peak_map=float(peak[c]), mean_map=float(mean[c]),
                   mean_uncertainty=None if spread is None else float(spread[c]))
        rows.append(row)
    return rows


def lesion_csv(rows: list[dict[str, Any]]) -> str:
    """The table as CSV text (a header alone when there is no lesion); floats with 10
    significant digits, empty cells for what does not apply."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=LESION_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows({key: _cell(value) for key, value in row.items()} for row in rows)
    return buffer.getvalue()


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    return f"{value:.10g}" if isinstance(value, float) else value
