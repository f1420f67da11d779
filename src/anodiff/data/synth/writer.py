"""Byte-reproducible NIfTI writing for the benchmark.

Images are stored as int16 with a NIfTI scale slope of 1/1000 (readers such as nibabel's
``get_fdata`` return the float intensities; the 0.001 step is far below the noise), masks
as uint8. The gzip stream is written with a zero timestamp and no file name, so the same
array always gives the same bytes, whatever the path or the time of the build.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np

QUANTUM = 1e-3
"""Intensity step of the stored images (the NIfTI ``scl_slope``)."""


def write_nifti(path: Path, array: np.ndarray, affine: np.ndarray, *, mask: bool) -> None:
    """Write ``array`` (an image, or a label mask when ``mask``) as a ``.nii.gz`` file."""
    if mask:
        data = np.asarray(array, dtype=np.uint8)
    else:
        data = np.clip(np.round(array / QUANTUM), 0, np.iinfo(np.int16).max).astype(np.int16)
    image = nib.Nifti1Image(data, affine)
    header = image.header
    header.set_xyzt_units("mm")
    header.set_slope_inter(1.0 if mask else QUANTUM, 0.0)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    header["descrip"] = b"anodiff synthetic benchmark"
    with path.open("wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0,
                                                compresslevel=6) as stream:
        stream.write(image.to_bytes())
