"""The only doors to the file system for images: ``read_image`` and ``write_like``.

Every image anodiff reads becomes an :class:`Image` (a float32 array plus the voxel-to-world
geometry and what is needed to write a result back in the same format); every map it writes
goes out through :func:`write_like`, in the format and geometry of the image it came from.
Both validate at the boundary and raise :class:`~anodiff.errors.AnodiffError` naming the file
and the problem; nothing deeper in the toolkit re-checks.

Which library does what (the backends are in :mod:`anodiff.data.formats` and
:mod:`anodiff.data.dicom`):

- NIfTI (``.nii``, ``.nii.gz``): nibabel. The affine is nibabel's best affine (sform, else
  qform); the header travels with the image so a map is written with the reference's sform,
  qform and codes untouched (float32 for maps, uint8 0/1 for boolean masks).
- NRRD (``.nrrd``, ``.nhdr``): pynrrd, in Fortran index order (first axis fastest, like
  NIfTI). The affine is built from ``space directions`` (one row per axis), ``space origin``
  and ``space``: LPS and LAS are converted to RAS by flipping the world axes; an unnamed
  space (no ``space`` field, ``scanner-xyz``, ``3D-right-handed``) is taken as-is.
- DICOM (``.dcm``, ``.dicom``, extension-less files with the ``DICM`` preamble, or a folder
  holding one series): pydicom, see :mod:`anodiff.data.dicom`.
- PNG, JPEG, TIFF: Pillow, grey (8/16/32-bit, float) or RGB (palette and alpha images are
  converted to RGB/grey). The affine is the identity: index (row, column) -> (x, y, 0).
- ``.npy``: numpy (``allow_pickle=False``), identity affine; a 3-D array is a volume.

Arrays: volumes are (X, Y, Z) in the file's voxel order (DICOM: rows, columns, slices),
2-D images (H, W), RGB images (H, W, 3) with ``Image.rgb`` set. Raw intensities are kept
(DICOM/NIfTI rescale slopes applied); normalisation is :mod:`anodiff.data.normalise`'s job.

Writing rules (``write_like``): the output format is the reference's; a path without an
image extension gets the reference's; a path whose extension names another format is an
error. Maps (float) and masks (bool) are written as:

- NIfTI / NRRD / NumPy: float32 maps (lossless), uint8 0/1 masks.
- TIFF: float32 maps (lossless), uint8 0/255 masks.
- PNG: maps clipped to [0, 1] and stored as 16-bit grey (quantisation step 1/65535, error
  <= 1/131070 inside [0, 1]); masks uint8 0/255. A JPEG reference is answered with a PNG
  next to the requested path (same stem, ``.png``): lossy JPEG would corrupt a map.
- DICOM: uint16 pixels with RescaleSlope/Intercept spanning the map's range (error
  <= (max - min) / 131070), see :mod:`anodiff.data.dicom`.

No writer ever writes onto the file or folder its reference was read from, and every
output is written under a temporary name and renamed into place
(:func:`anodiff.outputs.replaced_atomically`): a full disk leaves no truncated map.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from anodiff.data.dicom import check_series_folder, is_dicom_file
from anodiff.data.formats import READERS, WRITERS
from anodiff.errors import AnodiffError
from anodiff.outputs import replaced_atomically

FORMATS = ("nifti", "nrrd", "dicom", "png", "jpeg", "tiff", "npy")
SUFFIXES = {
    ".nii.gz": "nifti",
    ".nii": "nifti",
    ".nrrd": "nrrd",
    ".nhdr": "nrrd",
    ".dcm": "dicom",
    ".dicom": "dicom",
    ".png": "png",
    ".jpg": "jpeg",
    ".jpeg": "jpeg",
    ".tif": "tiff",
    ".tiff": "tiff",
    ".npy": "npy",
}
_DEFAULT_SUFFIX = {
    "nifti": ".nii.gz",
    "nrrd": ".nrrd",
    "dicom": ".dcm",
    "png": ".png",
    "jpeg": ".png",
    "tiff": ".tif",
    "npy": ".npy",
}


@dataclass(frozen=True, eq=False)
class Image:
    """An image or volume as read from disk, with what is needed to write results back.

    ``array`` is float32: (X, Y, Z) volumes in the file's voxel order, (H, W) images, or
    (H, W, 3) RGB images (``rgb=True``). ``affine`` maps voxel indices (0-based, in array
    axis order) to world RAS+ millimetres. ``header`` is the format's own metadata
    (nibabel header, NRRD header dict, list of pydicom Datasets in slice order, PIL mode).
    """

    array: np.ndarray
    affine: np.ndarray
    path: Path
    format: str
    header: Any = None
    rgb: bool = False

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        """The voxel grid's shape (the array's shape without the RGB channel axis)."""
        return tuple(self.array.shape[:-1] if self.rgb else self.array.shape)

    @property
    def spacing(self) -> tuple[float, ...]:
        """Voxel sizes in mm along each spatial array axis (column norms of the affine)."""
        n = len(self.spatial_shape)
        return tuple(float(s) for s in np.linalg.norm(self.affine[:3, :n], axis=0))


def image_format(path: str | Path) -> str | None:
    """The format anodiff would read ``path`` as, or None when it is not an image it reads.

    Folders are DICOM series; extension-less files are DICOM when they carry the preamble.
    """
    path = Path(path)
    if path.is_dir():
        return "dicom"
    name = path.name.lower()
    for suffix, fmt in SUFFIXES.items():
        if name.endswith(suffix):
            return fmt
    if not path.suffix and path.is_file() and is_dicom_file(path):
        return "dicom"
    return None


def image_stem(path: str | Path) -> str:
    """The file name without its image extension (``case_t1.nii.gz`` -> ``case_t1``)."""
    name = Path(path).name
    for suffix in SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def read_image(path: str | Path) -> Image:
    """Read an image, volume or DICOM series, validated (finite, non-empty, at most 3-D)."""
    path = Path(path)
    if not path.exists():
        raise AnodiffError(f"{path}: file not found")
    fmt = image_format(path)
    if fmt is None:
        known = ", ".join(SUFFIXES)
        raise AnodiffError(f"{path}: unsupported file type (anodiff reads {known}, DICOM folders)")
    array, affine, header, rgb = READERS[fmt](path)
    raw = np.asarray(array)
    if raw.dtype.kind not in "biuf":
        kind = "complex" if raw.dtype.kind == "c" else str(raw.dtype)
        raise AnodiffError(f"{path}: {kind} voxels; anodiff reads real-valued images (save "
                           "the magnitude or the real part explicitly)")
    array = raw.astype(np.float32)
    _validate(array, rgb, path)
    affine = np.asarray(affine, dtype=np.float64)
    _validate_affine(affine, len(array.shape) - int(rgb), path)
    return Image(array, affine, path, fmt, header, rgb)


def write_like(
    array: np.ndarray, reference: Image, path: str | Path, *, description: str | None = None
) -> Path:
    """Write ``array`` in ``reference``'s format and geometry; return the path written.

    ``array`` has the reference's spatial shape; a bool array is written as a mask, anything
    else as a float map (see the module docstring for each format's encoding). A DICOM
    series reference makes ``path`` a folder of one file per slice. ``description`` goes
    into the file where the format has a place for it (default: "anodiff anomaly map" or
    "anodiff anomaly mask").
    """
    out = _output_path(Path(path), reference)
    data = np.asarray(array)
    if data.shape != reference.spatial_shape:
        raise AnodiffError(
            f"{out}: array of shape {data.shape} does not fit {reference.path} "
            f"(spatial shape {reference.spatial_shape})"
        )
    mask = data.dtype == np.bool_
    if not mask and not np.all(np.isfinite(data)):
        raise AnodiffError(f"{out}: refusing to write {int(np.sum(~np.isfinite(data)))} NaN/Inf")
    text = description or ("anodiff anomaly mask" if mask else "anodiff anomaly map")
    with replaced_atomically(out) as tmp:
        WRITERS[reference.format](data, reference.affine, reference.header, tmp, text)
    return out


def _validate(array: np.ndarray, rgb: bool, path: Path) -> None:
    spatial = array.ndim - int(rgb)
    if array.size == 0:
        raise AnodiffError(f"{path}: empty image (shape {array.shape})")
    if spatial > 3:
        raise AnodiffError(f"{path}: {spatial}-D image of shape {array.shape}; expected 2-D or 3-D")
    if spatial < 2:
        raise AnodiffError(f"{path}: {spatial}-D array of shape {array.shape}; expected an image")
    bad = int(np.count_nonzero(~np.isfinite(array)))
    if bad:
        raise AnodiffError(f"{path}: {bad} NaN/Inf voxels out of {array.size}")


def _validate_affine(affine: np.ndarray, spatial: int, path: Path) -> None:
    """A voxel-to-world affine must be finite and invertible, or slicing (which axis is
    axial) and writing maps back are undefined."""
    if affine.shape != (4, 4) or not np.all(np.isfinite(affine)):
        raise AnodiffError(f"{path}: the voxel-to-world affine is not a finite 4 x 4 matrix")
    columns = np.linalg.norm(affine[:3, :spatial], axis=0)
    if (spatial == 3 and abs(np.linalg.det(affine[:3, :3])) < 1e-12) or np.any(columns < 1e-9):
        raise AnodiffError(f"{path}: the voxel-to-world affine is singular (zero voxel size or "
                           "collinear axes: a broken header, e.g. an all-zero sform); fix "
                           "the header's sform/qform")


def _output_path(path: Path, reference: Image) -> Path:
    """Apply the extension rules and refuse to write onto the reference's own file."""
    series = reference.format == "dicom" and len(reference.spatial_shape) == 3
    if not series:
        fmt = image_format(path) if not path.is_dir() else None
        if reference.format == "jpeg":
            path = path.with_name(image_stem(path) + ".png")
        elif fmt is None:
            path = path.with_name(path.name + _DEFAULT_SUFFIX[reference.format])
        elif fmt != reference.format:
            raise AnodiffError(
                f"{path}: extension names {fmt} but the reference {reference.path} is "
                f"{reference.format}; write_like keeps the reference's format"
            )
    if path.resolve() == reference.path.resolve():
        raise AnodiffError(f"{path}: refusing to overwrite the input it was read from")
    if series:
        check_series_folder(path)
    return path
