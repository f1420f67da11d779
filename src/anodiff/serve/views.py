"""A case's image, maps and lesion table as the viewer draws them.

Volumes are turned to the closest canonical orientation (voxel axes along R, A, S, by
nibabel's ``io_orientation``: transposes and flips only, no resampling), so the page draws
axial, coronal and sagittal planes with one convention (radiological: the patient's right on
the screen's left, anterior and superior up) and maps world millimetres with one affine. A
2-D image becomes one axial plane drawn as the file shows it. Values go out as float32 in C
order over (x, y, z).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from nibabel.orientations import apply_orientation, inv_ornt_aff, io_orientation

from anodiff.data.io import image_stem, read_image
from anodiff.errors import AnodiffError
from anodiff.serve.index import Case
from anodiff.workflows.detect import LESIONS_SUFFIX

OUTPUTS = ("anomaly_map", "mask", "uncertainty")  # the overlays, where the method has them


@dataclass(frozen=True)
class View:
    """One volume in the viewer's orientation, and its voxel -> RAS mm affine."""

    array: np.ndarray  # (x, y, z) float32
    affine: np.ndarray


def canonical(array: np.ndarray, affine: np.ndarray, volumetric: bool) -> View:
    """``array`` in the viewer's orientation (module docstring)."""
    if not volumetric:  # (H, W) or (H, W, 3): x = the column from the right, y = row from below
        grey = array.mean(-1) if array.ndim == 3 else array
        plane = grey[::-1, ::-1].T[..., None]
        return View(np.ascontiguousarray(plane, dtype=np.float32), np.eye(4))
    ornt = io_orientation(affine)
    turned = apply_orientation(array, ornt)
    return View(np.ascontiguousarray(turned, dtype=np.float32),
                affine @ inv_ornt_aff(ornt, array.shape))


def output_files(out: Path, name: str) -> dict[str, Path]:
    """``{kind: path}`` of the overlays and pseudo-healthy images detect wrote for ``name``
    (an image file, or a DICOM image series folder)."""
    found = {}
    for path in sorted(out.iterdir()):
        stem = image_stem(path)
        for kind in OUTPUTS:
            if stem == f"{name}_{kind}":
                found[kind] = path
        if stem.startswith(f"{name}_pseudo_healthy_") and "pseudo_healthy" not in found:
            found["pseudo_healthy"] = path  # the first sequence's
    return found


class CaseView:
    """The viewer's volumes and lesion table of a detected case (read once, kept)."""

    def __init__(self, case: Case, out: Path) -> None:
        image = read_image(case.image)
        self.volumetric = image.array.ndim == 3 and not image.rgb
        base = canonical(image.array, image.affine, self.volumetric)
        self.affine = base.affine
        self.volumes = {"image": base.array}
        self.source_affine, self.source_shape = image.affine, image.spatial_shape
        for kind, path in output_files(out, case.name).items():
            loaded = read_image(path)
            self.volumes[kind] = canonical(loaded.array.astype(np.float32), loaded.affine,
                                           self.volumetric).array
        if "anomaly_map" not in self.volumes:
            raise AnodiffError(f"{out}: no anomaly map of {case.name}")
        self.lesions = self._lesions(out / f"{case.name}{LESIONS_SUFFIX}")
        self.files = sorted(p for p in out.iterdir() if p.is_file())

    def meta(self) -> dict[str, Any]:
        """What the page needs before the volumes: shape, affine, kinds, value ranges,
        the lesion table and the files to download."""
        ranges = {k: [float(v.min()), float(v.max())] for k, v in self.volumes.items()}
        return {"shape": list(self.volumes["image"].shape), "affine": self.affine.tolist(),
                "volumetric": self.volumetric, "kinds": list(self.volumes), "ranges": ranges,
                "lesions": self.lesions,
                "files": [{"index": i, "name": p.name, "bytes": p.stat().st_size}
                          for i, p in enumerate(self.files)]}

    def _lesions(self, table: Path) -> list[dict[str, Any]]:
        """The lesion rows with each centroid as a voxel of the viewer's grid."""
        if not table.is_file():
            return []
        with table.open(newline="") as f:
            rows = list(csv.DictReader(f))
        shape = self.volumes["image"].shape
        for row in rows:
            if self.volumetric:
                world = [float(row[f"centroid_{a}_mm"]) for a in "ras"]
                voxel = np.linalg.solve(self.affine, [*world, 1.0])[:3]
            else:  # file row i, column j -> the plane's x, y (canonical above)
                i, j = float(row["centroid_i"]), float(row["centroid_j"])
                voxel = np.array([shape[0] - 1 - j, shape[1] - 1 - i, 0.0])
            row["voxel"] = [int(np.clip(round(v), 0, n - 1)) for v, n in zip(voxel, shape,
                                                                            strict=True)]
        return rows
