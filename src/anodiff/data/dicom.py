"""DICOM files and series through pydicom: geometry-preserving read, and maps written back.

Reading. A single file is a 2-D image (rows, columns), or (rows, columns, 3) for colour; a
folder holding one series is a volume (rows, columns, slices) with ``array[..., k]`` being
slice k as pydicom decodes it. Slices are ordered by their ImagePositionPatient projected on
the slice normal (row cosine x column cosine); the series must share one orientation, pixel
grid and spacing, and its positions must be evenly spaced along a line (otherwise one affine
cannot describe it and the error says so). In a folder, files that are not DICOM (a README,
a DICOMDIR) and files without pixel data are ignored; files named ``.dcm`` are read even
without the Part 10 preamble (old ACR-NEMA style). Several SeriesInstanceUIDs in one folder
are an error that lists them. Pixel values go through the modality LUT (RescaleSlope/Intercept),
slice by slice. Multi-frame files are refused with a clear message.

Geometry. DICOM's patient space is LPS; the affine is returned in RAS (x and y negated).
Array axis 0 (row index) steps PixelSpacing[0] along the column cosine (IOP[3:6]), axis 1
(column index) steps PixelSpacing[1] along the row cosine (IOP[0:3]), axis 2 steps from one
slice position to the next (gantry tilt is thus kept as a shear). A single file's third
axis is the normal times SpacingBetweenSlices (else SliceThickness, else 1 mm). Files without
patient geometry (e.g. CR, secondary capture) get a diagonal affine from (Imager)PixelSpacing.

Writing. A map "like" a reference becomes a new series (a single file for a single-file
reference): every slice copies its reference slice's tags (patient, study, frame of
reference, position, orientation, spacing), gets a new SeriesInstanceUID and SOPInstanceUIDs
(pydicom.uid.generate_uid), ImageType DERIVED\\SECONDARY, the given SeriesDescription, no
private tags, and uncompressed Explicit VR Little Endian pixel data as uint16 (MONOCHROME2).
One RescaleSlope/Intercept for the whole series maps 0..65535 onto [min, max] of the map, so
the stored value is within (max - min) / 131070 of the map (plus the 16-character DS
rounding of slope and intercept, about 1e-12 relative). Masks are stored as 0/1, slope 1.
Series slices are named ``IM00001.dcm``...; a folder holding other files is refused (the
files of an earlier write of the same series are replaced, so reruns work).
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_modality_lut
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pydicom.valuerep import format_number_as_ds

from anodiff.errors import AnodiffError

_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
# Tags whose values describe the old pixel data and would mislead a viewer of the new one.
SERIES_FILE = re.compile(r"IM\d{5}\.dcm")  # the files of a series written by anodiff
_STALE = (
    "WindowCenter",
    "WindowWidth",
    "WindowCenterWidthExplanation",
    "VOILUTSequence",
    "ModalityLUTSequence",
    "SmallestImagePixelValue",
    "LargestImagePixelValue",
    "PixelPaddingValue",
    "PixelPaddingRangeLimit",
    "RescaleType",
    "LossyImageCompression",
    "LossyImageCompressionRatio",
    "LossyImageCompressionMethod",
    "DataSetTrailingPadding",
)


def is_dicom_file(path: Path) -> bool:
    """Whether ``path`` starts with the DICOM Part 10 preamble (``DICM`` at byte 128)."""
    with open(path, "rb") as f:
        head = f.read(132)
    return len(head) == 132 and head[128:] == b"DICM"


def read_dicom(path: Path) -> tuple[np.ndarray, np.ndarray, list[Dataset], bool]:
    """Read a DICOM file or series folder: (array, RAS affine, datasets in slice order, rgb).

    The datasets keep every tag but the pixel data (the array holds it), for writing back.
    """
    if path.is_dir():
        return _read_series(path)
    ds = _dcmread(path)
    if ds is None:
        raise AnodiffError(f"{path}: not a DICOM file (no DICM preamble)")
    array = _pixels(ds, path)
    rgb = array.ndim == 3
    affine = _plane_affine(ds)
    if _has_geometry(ds):
        affine[:3, 2] = _normal(ds) * _slice_step(ds)
        affine = _LPS_TO_RAS @ affine
    return array, affine, [_strip(ds)], rgb


def write_dicom_like(array: np.ndarray, datasets: list[Dataset], out: Path, text: str) -> Path:
    """Write ``array`` as a new series shaped like ``datasets``; return the file or folder."""
    if not datasets or not all(isinstance(ds, Dataset) for ds in datasets):
        raise AnodiffError(f"{out}: the reference carries no DICOM header to write like")
    slope, intercept, stored = _to_uint16(array)
    if array.ndim == 2:
        planes, targets = [stored], [out]
    else:
        planes = [stored[..., k] for k in range(stored.shape[-1])]
        targets = [out / f"IM{k + 1:05d}.dcm" for k in range(len(planes))]
        out.mkdir(parents=True, exist_ok=True)
    series_uid = generate_uid()
    for k, (reference, plane, target) in enumerate(zip(datasets, planes, targets, strict=True)):
        ds = copy.deepcopy(reference)
        ds.remove_private_tags()
        for keyword in _STALE:
            if keyword in ds:
                delattr(ds, keyword)
        if not hasattr(ds, "file_meta"):
            ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.set_pixel_data(np.ascontiguousarray(plane), "MONOCHROME2", 16)
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.SeriesInstanceUID = series_uid
        ds.SeriesDescription = text[:64]
        ds.ImageType = ["DERIVED", "SECONDARY"]
        ds.InstanceNumber = k + 1
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
        pydicom.dcmwrite(target, ds, enforce_file_format=True)  # converts big endian sources
    return out


def _to_uint16(array: np.ndarray) -> tuple[str, str, np.ndarray]:
    """uint16 pixels and the DS strings of the slope/intercept that map them back."""
    if array.dtype == np.bool_:
        return "1", "0", array.astype(np.uint16)
    lo, hi = float(array.min()), float(array.max())
    slope = format_number_as_ds((hi - lo) / 65535.0) if hi > lo else "1"
    intercept = format_number_as_ds(lo)
    scaled = (array.astype(np.float64) - float(intercept)) / float(slope)
    return slope, intercept, np.clip(np.round(scaled), 0, 65535).astype(np.uint16)


def check_series_folder(out: Path) -> None:
    """A series is written as a folder of its own: an existing ``out`` must be a folder
    holding only an earlier series written by anodiff (``IM#####.dcm``), which it replaces."""
    if not out.exists():
        return
    if not out.is_dir():
        raise AnodiffError(f"{out}: exists and is not a folder; a DICOM series needs a folder")
    others = sorted(p.name for p in out.iterdir() if not SERIES_FILE.fullmatch(p.name))
    if others:
        raise AnodiffError(
            f"{out}: folder holds other files ({', '.join(others[:5])}); "
            "write a DICOM series into an empty folder"
        )


def _dcmread(path: Path) -> Dataset | None:
    """The dataset in ``path``, or None when it is not DICOM.

    Files named ``.dcm``/``.dicom`` are read even without the Part 10 preamble and file meta
    (older ACR-NEMA style files); other files need the ``DICM`` preamble.
    """
    try:
        return pydicom.dcmread(path, force=path.suffix.lower() in (".dcm", ".dicom"))
    except InvalidDicomError:
        return None
    except Exception as err:  # pydicom raises many types for damaged files
        raise AnodiffError(f"{path}: unreadable DICOM file ({type(err).__name__}: {err})") from err


def _pixels(ds: Dataset, path: Path) -> np.ndarray:
    """The modality values (rescale applied) of a single-frame dataset."""
    if "PixelData" not in ds:
        raise AnodiffError(f"{path}: no DICOM image in the file (no Pixel Data element)")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        raise AnodiffError(
            f"{path}: multi-frame DICOM ({frames} frames) is not supported; "
            "export the series as one file per slice"
        )
    try:
        return apply_modality_lut(ds.pixel_array, ds).astype(np.float32)
    except Exception as err:  # missing codec, truncated pixel data, bad group 0028...
        syntax = getattr(ds.get("file_meta", {}).get("TransferSyntaxUID"), "name", "unknown")
        raise AnodiffError(f"{path}: cannot decode DICOM pixel data ({syntax}): {err}") from err


def _strip(ds: Dataset) -> Dataset:
    del ds.PixelData
    return ds


def _has_geometry(ds: Dataset) -> bool:
    return "ImageOrientationPatient" in ds and "ImagePositionPatient" in ds


def _normal(ds: Dataset) -> np.ndarray:
    iop = np.asarray(ds.ImageOrientationPatient, dtype=np.float64)
    return np.cross(iop[:3], iop[3:])


def _slice_step(ds: Dataset) -> float:
    for keyword in ("SpacingBetweenSlices", "SliceThickness"):
        value = ds.get(keyword)
        if value not in (None, "") and float(value) > 0:
            return float(value)
    return 1.0


def _plane_affine(ds: Dataset) -> np.ndarray:
    """The in-plane LPS affine (columns 0, 1 and translation), or a diagonal one."""
    spacing = ds.get("PixelSpacing") or ds.get("ImagerPixelSpacing") or (1.0, 1.0)
    dr, dc = (float(v) for v in spacing)
    affine = np.diag([dr, dc, 1.0, 1.0])
    if _has_geometry(ds):
        iop = np.asarray(ds.ImageOrientationPatient, dtype=np.float64)
        affine[:3, 0] = iop[3:] * dr  # row index moves along the column cosine
        affine[:3, 1] = iop[:3] * dc  # column index moves along the row cosine
        affine[:3, 3] = np.asarray(ds.ImagePositionPatient, dtype=np.float64)
    return affine


def _read_series(folder: Path) -> tuple[np.ndarray, np.ndarray, list[Dataset], bool]:
    slices: list[tuple[Path, Dataset]] = []
    passed_over: list[str] = []  # files that are not DICOM images (a README, a junk file)
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        if path.name.startswith(".") or path.name.upper() == "DICOMDIR":
            continue
        ds = _dcmread(path)  # None: not DICOM, e.g. a README beside the series
        if ds is not None and "PixelData" in ds:
            slices.append((path, ds))
        else:
            passed_over.append(path.name)
    note = f" (passed over as not DICOM images: {', '.join(passed_over[:5])})" \
        if passed_over else ""
    if not slices:
        raise AnodiffError(f"{folder}: folder holds no DICOM images{note}")
    series = sorted({str(ds.get("SeriesInstanceUID", "")) for _, ds in slices})
    if len(series) > 1:
        raise AnodiffError(
            f"{folder}: folder holds {len(series)} series ({', '.join(series)}); "
            "put each series in its own folder"
        )
    first_path, first = slices[0]
    for path, ds in slices:
        if not _has_geometry(ds):
            raise AnodiffError(
                f"{path}: no ImagePositionPatient/ImageOrientationPatient; "
                "cannot order the slices of the series"
            )
        _check_same_grid(first_path, first, path, ds)
    normal = _normal(first)
    slices.sort(key=lambda item: float(np.dot(normal, item[1].ImagePositionPatient)))
    positions = np.array([ds.ImagePositionPatient for _, ds in slices], dtype=np.float64)
    affine = _plane_affine(slices[0][1])
    try:
        affine[:3, 2] = _series_step(folder, positions, normal, _slice_step(first))
    except AnodiffError as err:  # a junk file in place of a slice leaves a gap: name it
        raise AnodiffError(f"{err}{note}") from None
    array = np.stack([_pixels(ds, path) for path, ds in slices], axis=-1)
    if array.ndim != 3:
        raise AnodiffError(f"{folder}: colour DICOM series are not supported")
    return array, _LPS_TO_RAS @ affine, [_strip(ds) for _, ds in slices], False


def _check_same_grid(first_path: Path, first: Dataset, path: Path, ds: Dataset) -> None:
    for keyword in ("Rows", "Columns"):
        if ds.get(keyword) != first.get(keyword):
            raise AnodiffError(
                f"{path}: {keyword} {ds.get(keyword)} differs from "
                f"{first.get(keyword)} in {first_path.name}"
            )
    for keyword in ("ImageOrientationPatient", "PixelSpacing"):
        a = np.asarray(ds.get(keyword, (1.0, 1.0)), dtype=np.float64)
        b = np.asarray(first.get(keyword, (1.0, 1.0)), dtype=np.float64)
        if a.shape != b.shape or not np.allclose(a, b, atol=1e-4):
            raise AnodiffError(
                f"{path}: {keyword} {a.tolist()} differs from {b.tolist()} in "
                f"{first_path.name}; a series needs one orientation and grid"
            )


def _series_step(
    folder: Path, positions: np.ndarray, normal: np.ndarray, fallback: float
) -> np.ndarray:
    """The LPS vector from one slice to the next, checked to be the same for every pair."""
    if len(positions) == 1:
        return normal * fallback
    gaps = np.diff(positions @ normal)
    if np.any(gaps < 1e-3):
        raise AnodiffError(
            f"{folder}: {int(np.sum(gaps < 1e-3)) + 1} slices share a position; "
            "several acquisitions (echoes, time points) in one series are not supported"
        )
    step = (positions[-1] - positions[0]) / (len(positions) - 1)
    expected = positions[0] + np.arange(len(positions))[:, None] * step
    tolerance = max(1e-3, 0.01 * float(np.linalg.norm(step)))
    if not np.allclose(positions, expected, rtol=0.0, atol=tolerance):
        raise AnodiffError(
            f"{folder}: slices are not evenly spaced (gaps from {gaps.min():.4g} to "
            f"{gaps.max():.4g} mm); one affine cannot describe this series"
        )
    return step
