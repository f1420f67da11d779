"""Per-format readers and writers behind :mod:`anodiff.data.io` (NIfTI, NRRD, raster, NumPy).

Each reader turns one file into ``(array, affine, header, rgb)``: the raw array, its 4 x 4
voxel-to-RAS affine, the format's own header, and whether the last axis is RGB. Each
writer takes ``(data, affine, header, out, text)`` — ``data`` is a float map or a bool mask
already checked by ``write_like`` — and returns the path written. Library exceptions
become :class:`~anodiff.errors.AnodiffError` naming the file; :mod:`anodiff.data.io` does the
checks common to all formats. DICOM lives in :mod:`anodiff.data.dicom`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import nibabel as nib
import nrrd
import numpy as np
from PIL import Image as PILImage

from anodiff.data.dicom import read_dicom, write_dicom_like
from anodiff.errors import AnodiffError

Decoded = tuple[np.ndarray, np.ndarray, Any, bool]

# NRRD world spaces -> sign flips that take them to RAS; unnamed spaces are used as they are.
_NRRD_TO_RAS = {
    "right-anterior-superior": (1, 1, 1),
    "ras": (1, 1, 1),
    "left-anterior-superior": (-1, 1, 1),
    "las": (-1, 1, 1),
    "left-posterior-superior": (-1, -1, 1),
    "lps": (-1, -1, 1),
    "scanner-xyz": (1, 1, 1),
    "3d-right-handed": (1, 1, 1),
}
# NRRD fields that describe the stored bytes, not the geometry: pynrrd sets them anew.
_NRRD_STORAGE = (
    "type",
    "dimension",
    "sizes",
    "endian",
    "data file",
    "datafile",
    "line skip",
    "byte skip",
    "min",
    "max",
    "old min",
    "old max",
)


def _unreadable(path: Path, what: str, err: Exception) -> AnodiffError:
    return AnodiffError(f"{path}: unreadable {what} file ({type(err).__name__}: {err})")


def _values(data: np.ndarray) -> np.ndarray:
    """Masks as uint8 0/1, maps as float32."""
    return data.astype(np.uint8) if data.dtype == np.bool_ else data.astype(np.float32)


def read_nifti(path: Path) -> Decoded:
    """NIfTI-1/2 through nibabel; a trailing singleton 4th dimension is squeezed."""
    try:
        img = nib.load(path)
        if not isinstance(img, nib.Nifti1Image | nib.Nifti2Image):
            raise TypeError(f"not a NIfTI image ({type(img).__name__})")
        if img.get_data_dtype().kind in "biuf":
            data = img.get_fdata(dtype=np.float32)
        else:  # complex or structured voxels: returned as stored, refused by read_image
            data = np.asanyarray(img.dataobj)
    except Exception as err:  # nibabel raises many types for corrupt files
        raise _unreadable(path, "NIfTI", err) from err
    while data.ndim > 3 and data.shape[-1] == 1:  # (X, Y, Z, 1): a volume saved as 4-D
        data = data[..., 0]
    return data, img.affine, img.header.copy(), False


def write_nifti(data: np.ndarray, affine: np.ndarray, header: Any, out: Path, text: str) -> Path:
    """With a NIfTI header: keep its sform, qform and codes; else build one from ``affine``."""
    values = _values(data)
    if isinstance(header, nib.Nifti1Header):  # NIfTI-2 headers subclass NIfTI-1 headers
        header = header.copy()
        header.set_data_dtype(values.dtype)
        header.set_slope_inter(1.0, 0.0)
        header["cal_min"], header["cal_max"] = 0.0, 0.0
        cls = nib.Nifti2Image if isinstance(header, nib.Nifti2Header) else nib.Nifti1Image
        img = cls(values, None, header=header)  # None: the header's sform/qform stand
    else:
        img = nib.Nifti1Image(values, affine)
    img.header["descrip"] = text[:79].encode()
    nib.save(img, out)
    return out


def read_nrrd(path: Path) -> Decoded:
    """NRRD through pynrrd, Fortran order; the affine from space directions/origin/space."""
    try:
        data, header = nrrd.read(str(path))
    except Exception as err:  # pynrrd raises NRRDError, OSError, ValueError...
        raise _unreadable(path, "NRRD", err) from err
    if data.ndim not in (2, 3):
        raise AnodiffError(f"{path}: {data.ndim}-D NRRD of shape {data.shape}; expected 2-D or 3-D")
    return data, _nrrd_affine(header, data.ndim, path), header, False


def _nrrd_affine(header: dict[str, Any], ndim: int, path: Path) -> np.ndarray:
    space = str(header.get("space", "scanner-xyz")).lower()
    if space not in _NRRD_TO_RAS:
        raise AnodiffError(f"{path}: unsupported NRRD space '{header['space']}'")
    if "space directions" in header:
        directions = np.asarray(header["space directions"], dtype=np.float64)
        if not np.all(np.isfinite(directions)):
            raise AnodiffError(f"{path}: NRRD has a non-spatial axis (kinds {header.get('kinds')})")
    else:
        spacings = np.asarray(header.get("spacings", np.ones(ndim)), dtype=np.float64)
        directions = np.diag(np.where(np.isfinite(spacings), spacings, 1.0))
    affine = np.eye(4)
    affine[: directions.shape[1], :ndim] = directions.T
    if ndim == 2:  # a plane in 3-D: complete with the unit normal
        normal = np.cross(affine[:3, 0], affine[:3, 1])
        affine[:3, 2] = normal / np.linalg.norm(normal)
    origin = np.asarray(header.get("space origin", np.zeros(3)), dtype=np.float64)
    affine[: origin.size, 3] = origin
    return np.diag([*_NRRD_TO_RAS[space], 1.0]) @ affine


def write_nrrd(data: np.ndarray, affine: np.ndarray, header: Any, out: Path, text: str) -> Path:
    """With an NRRD header: keep its fields; else describe ``affine`` in LPS."""
    if isinstance(header, dict):
        fields = {k: v for k, v in header.items() if k not in _NRRD_STORAGE}
    else:
        lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine
        fields = {
            "space": "left-posterior-superior",
            "space directions": lps[:3, : data.ndim].T,
            "space origin": lps[:3, 3],
            "kinds": ["domain"] * data.ndim,
            "encoding": "gzip",
        }
    fields["content"] = text
    nrrd.write(str(out), _values(data), fields)
    return out


def read_raster(path: Path) -> Decoded:
    """PNG/JPEG/TIFF through Pillow: grey (any depth) or RGB; palette/alpha are converted
    (a palette image whose colours are all greys is grey: one channel, as it looks)."""
    try:
        with PILImage.open(path) as im:
            pages = getattr(im, "n_frames", 1)
            mode = im.mode
            if mode in ("1", "LA", "La"):
                im = im.convert("L")
            elif mode not in ("L", "I", "F", "RGB") and not mode.startswith("I;16"):
                im = im.convert("RGB")  # palette, alpha, CMYK, YCbCr...
            data = np.array(im)
            if mode in ("P", "PA") and (data == data[..., :1]).all():
                data = data[..., 0]
    except Exception as err:  # Pillow raises OSError, SyntaxError, ValueError...
        raise _unreadable(path, "image", err) from err
    if pages > 1:
        raise AnodiffError(f"{path}: multi-page image ({pages} pages); expected one image")
    return data, np.eye(4), mode, data.ndim == 3


def write_png(data: np.ndarray, affine: np.ndarray, header: Any, out: Path, text: str) -> Path:
    """Masks as 8-bit 0/255; maps clipped to [0, 1] as 16-bit grey."""
    if data.dtype == np.bool_:
        PILImage.fromarray(data.astype(np.uint8) * 255).save(out)
    else:
        PILImage.fromarray(np.round(np.clip(data, 0.0, 1.0) * 65535.0).astype(np.uint16)).save(out)
    return out


def write_tiff(data: np.ndarray, affine: np.ndarray, header: Any, out: Path, text: str) -> Path:
    """Masks as 8-bit 0/255; maps as float32 (lossless)."""
    if data.dtype == np.bool_:
        PILImage.fromarray(data.astype(np.uint8) * 255).save(out, description=text)
    else:
        PILImage.fromarray(data.astype(np.float32)).save(out, description=text)
    return out


def read_npy(path: Path) -> Decoded:
    """A numeric ``.npy`` array (never unpickled), identity affine."""
    try:
        data = np.load(path, allow_pickle=False)
    except Exception as err:  # ValueError (pickled objects), OSError, EOFError...
        raise _unreadable(path, "NumPy", err) from err
    if not (np.issubdtype(data.dtype, np.number) or data.dtype == np.bool_):
        raise AnodiffError(f"{path}: NumPy array of dtype {data.dtype}; expected numbers")
    return data, np.eye(4), None, False


def write_npy(data: np.ndarray, affine: np.ndarray, header: Any, out: Path, text: str) -> Path:
    """Maps as float32, masks as uint8 0/1."""
    np.save(out, _values(data))
    return out


def _write_dicom(data: np.ndarray, affine: np.ndarray, header: Any, out: Path, text: str) -> Path:
    return write_dicom_like(data, header, out, text)


READERS: dict[str, Callable[[Path], Decoded]] = {
    "nifti": read_nifti,
    "nrrd": read_nrrd,
    "dicom": read_dicom,
    "png": read_raster,
    "jpeg": read_raster,
    "tiff": read_raster,
    "npy": read_npy,
}
WRITERS: dict[str, Callable[[np.ndarray, np.ndarray, Any, Path, str], Path]] = {
    "nifti": write_nifti,
    "nrrd": write_nrrd,
    "dicom": _write_dicom,
    "png": write_png,
    "jpeg": write_png,  # lossy JPEG would corrupt a map: io writes a PNG instead
    "tiff": write_tiff,
    "npy": write_npy,
}
