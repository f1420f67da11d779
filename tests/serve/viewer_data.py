"""Small NIfTI cases for the viewer's tests."""

from pathlib import Path

import nibabel as nib
import numpy as np

SHAPE = (20, 22, 8)
AFFINE = np.array([[-1.5, 0, 0, 30.0], [0, 1.2, 0, -20.0], [0, 0, 3.0, -10.0], [0, 0, 0, 1]])
SEQUENCES = ("flair", "t1")


def write_case(root: Path, name: str, seed: int, lesion: bool) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    g = np.indices(SHAPE).astype(float)
    brain = ((g[0] - 9.5) ** 2 / 70 + (g[1] - 10.5) ** 2 / 80 + (g[2] - 3.5) ** 2 / 10) < 1
    for k, seq in enumerate(SEQUENCES):
        volume = np.where(brain, rng.normal(80 + 20 * k, 4, SHAPE), 0.0)
        if lesion:
            volume[8:11, 9:12, 3:5] = 250.0
        nib.save(nib.Nifti1Image(volume.astype(np.float32), AFFINE),
                 folder / f"{name}_{seq}.nii.gz")
    return folder
