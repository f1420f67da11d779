"""Tests for anodiff.data.io (and its backends formats.py, dicom.py): real files, geometry,
round trips through write_like, and a named error for every malformed input."""

import copy
import re
import shutil
from pathlib import Path

import nibabel as nib
import nrrd
import numpy as np
import pydicom
import pytest
from PIL import Image as PILImage
from pydicom.data import get_testdata_file

from anodiff.data.io import Image, image_format, read_image, write_like
from anodiff.errors import AnodiffError

DICOM_DIRS = Path(get_testdata_file("CT_small.dcm")).parent / "dicomdirtests"


def oblique_affine() -> np.ndarray:
    """Rotation about two axes, non-isotropic spacing, an offset."""
    a, b = np.deg2rad(20.0), np.deg2rad(-35.0)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    affine = np.eye(4)
    affine[:3, :3] = rz @ rx @ np.diag([0.9, 1.3, 2.5])
    affine[:3, 3] = [-40.0, 12.5, 7.0]
    return affine


def ras_of(affine: np.ndarray, index: tuple[int, ...]) -> np.ndarray:
    return (affine @ np.array([*index, *[0] * (3 - len(index)), 1.0]))[:3]


# ---- NIfTI ---------------------------------------------------------------------------------


def test_nifti_round_trip_keeps_sform_qform_and_values(tmp_path: Path) -> None:
    affine = oblique_affine()
    data = np.random.default_rng(0).normal(size=(7, 6, 5)).astype(np.float32)
    img = nib.Nifti1Image(data, affine)
    img.header.set_sform(affine, code=2)
    img.header.set_qform(affine, code=1)
    nib.save(img, tmp_path / "in.nii.gz")

    ref = read_image(tmp_path / "in.nii.gz")
    assert ref.format == "nifti" and ref.array.dtype == np.float32 and ref.array.shape == (7, 6, 5)
    np.testing.assert_allclose(ref.affine, affine, atol=1e-5)
    np.testing.assert_allclose(ref.spacing, [0.9, 1.3, 2.5], atol=1e-5)

    out = write_like(ref.array * 2.0, ref, tmp_path / "map.nii.gz")
    back = nib.load(out)
    assert back.get_data_dtype() == np.float32
    assert int(back.header["sform_code"]) == 2 and int(back.header["qform_code"]) == 1
    np.testing.assert_allclose(back.affine, ref.affine, atol=1e-6)
    np.testing.assert_array_equal(read_image(out).array, ref.array * 2.0)

    mask_out = write_like(ref.array > 0, ref, tmp_path / "mask.nii.gz")
    assert nib.load(mask_out).get_data_dtype() == np.uint8
    np.testing.assert_array_equal(read_image(mask_out).array, (ref.array > 0).astype(np.float32))


def test_nifti_trailing_singleton_is_squeezed_but_4d_is_refused(tmp_path: Path) -> None:
    nib.save(nib.Nifti1Image(np.ones((4, 5, 6, 1), np.float32), np.eye(4)), tmp_path / "a.nii")
    image = read_image(tmp_path / "a.nii")
    assert image.array.shape == (4, 5, 6)
    out = write_like(image.array, image, tmp_path / "b.nii")
    assert nib.load(out).shape == (4, 5, 6)

    nib.save(nib.Nifti1Image(np.ones((4, 5, 6, 3), np.float32), np.eye(4)), tmp_path / "t.nii")
    with pytest.raises(AnodiffError, match=r"t\.nii: 4-D image of shape \(4, 5, 6, 3\)"):
        read_image(tmp_path / "t.nii")


def test_nifti_written_from_a_header_less_reference(tmp_path: Path) -> None:
    ref = Image(np.zeros((3, 4, 5), np.float32), oblique_affine(), tmp_path / "x.nii.gz", "nifti")
    out = write_like(np.ones((3, 4, 5), np.float32), ref, tmp_path / "made")
    assert out.name == "made.nii.gz"  # the reference's extension is added
    np.testing.assert_allclose(read_image(out).affine, oblique_affine(), atol=1e-5)


# ---- NRRD ----------------------------------------------------------------------------------


def test_nrrd_lps_space_becomes_ras(tmp_path: Path) -> None:
    data = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    header = {
        "space": "left-posterior-superior",
        "space directions": np.array([[0.0, -2.0, 0.0], [1.5, 0.0, 0.0], [0.0, 0.0, 3.0]]),
        "space origin": np.array([10.0, 20.0, 30.0]),
        "kinds": ["domain"] * 3,
    }
    nrrd.write(str(tmp_path / "v.nrrd"), data, header)
    image = read_image(tmp_path / "v.nrrd")
    expected = np.array(
        [[0.0, -1.5, 0.0, -10.0], [2.0, 0.0, 0.0, -20.0], [0.0, 0.0, 3.0, 30.0], [0, 0, 0, 1]]
    )
    np.testing.assert_array_equal(image.affine, expected)
    np.testing.assert_array_equal(image.array, data)  # Fortran order: axis 0 fastest
    assert image.spacing == (2.0, 1.5, 3.0)

    out = write_like(image.array / 23.0, image, tmp_path / "map.nrrd")
    back_data, back_header = nrrd.read(str(out))
    assert back_header["space"] == "left-posterior-superior"
    assert back_header["kinds"] == ["domain"] * 3
    np.testing.assert_array_equal(back_data, (data / 23.0).astype(np.float32))
    np.testing.assert_array_equal(read_image(out).affine, expected)


def test_nrrd_ras_and_header_less_writer_agree(tmp_path: Path) -> None:
    header = {
        "space": "RAS",
        "space directions": np.diag([1.0, 2.0, 3.0]),
        "space origin": np.array([1.0, 2.0, 3.0]),
    }
    nrrd.write(str(tmp_path / "r.nrrd"), np.ones((2, 2, 2), np.float32), header)
    image = read_image(tmp_path / "r.nrrd")
    np.testing.assert_array_equal(image.affine[:3, 3], [1.0, 2.0, 3.0])
    bare = Image(image.array, image.affine, tmp_path / "other.nrrd", "nrrd")
    out = write_like(image.array > 0, bare, tmp_path / "m.nrrd")
    assert nrrd.read_header(str(out))["space"] == "left-posterior-superior"
    np.testing.assert_allclose(read_image(out).affine, image.affine)


def test_detached_nrrd_header(tmp_path: Path) -> None:
    data = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    nrrd.write(str(tmp_path / "a.nhdr"), data, {"space": "LPS", "space directions": np.eye(3)})
    image = read_image(tmp_path / "a.nhdr")
    out = write_like(image.array + 1.0, image, tmp_path / "b.nhdr")
    assert out.name == "b.nhdr" and (tmp_path / "b.raw.gz").exists()
    np.testing.assert_array_equal(read_image(out).array, data + 1.0)
    np.testing.assert_array_equal(read_image(out).affine, np.diag([-1.0, -1.0, 1.0, 1.0]))


def test_nrrd_non_spatial_axis_is_refused(tmp_path: Path) -> None:
    header = {
        "space": "LPS",
        "kinds": ["vector", "domain", "domain"],
        "space directions": np.array([[np.nan] * 3, [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]),
    }
    nrrd.write(str(tmp_path / "vec.nrrd"), np.ones((3, 4, 5), np.float32), header)
    with pytest.raises(AnodiffError, match=r"vec\.nrrd: NRRD has a non-spatial axis"):
        read_image(tmp_path / "vec.nrrd")


# ---- DICOM ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small.dcm"])
def test_dicom_file_values_and_geometry(name: str, tmp_path: Path) -> None:
    ds = pydicom.dcmread(get_testdata_file(name))
    image = read_image(get_testdata_file(name))
    slope, intercept = float(ds.get("RescaleSlope", 1)), float(ds.get("RescaleIntercept", 0))
    np.testing.assert_array_equal(image.array, ds.pixel_array * slope + intercept)
    assert image.array.shape == (ds.Rows, ds.Columns) and image.format == "dicom"

    ipp = np.array(ds.ImagePositionPatient, dtype=float)
    iop = np.array(ds.ImageOrientationPatient, dtype=float)
    dr, dc = (float(v) for v in ds.PixelSpacing)
    lps_to_ras = np.array([-1.0, -1.0, 1.0])
    np.testing.assert_allclose(ras_of(image.affine, (0, 0)), ipp * lps_to_ras)
    np.testing.assert_allclose(
        ras_of(image.affine, (3, 5)), (ipp + 3 * dr * iop[3:] + 5 * dc * iop[:3]) * lps_to_ras
    )

    scaled = (image.array - image.array.min()) / np.ptp(image.array)
    out = write_like(scaled, image, tmp_path / "map.dcm")
    written = pydicom.dcmread(out)
    assert written.SeriesInstanceUID != ds.SeriesInstanceUID
    assert written.SOPInstanceUID != ds.SOPInstanceUID
    assert written.StudyInstanceUID == ds.StudyInstanceUID and written.PatientID == ds.PatientID
    assert written.SeriesDescription == "anodiff anomaly map"
    back = read_image(out)
    np.testing.assert_allclose(back.affine, image.affine)
    assert np.abs(back.array - scaled).max() <= 1.0 / 131070 + 1e-6


def series_copy(tmp_path: Path) -> Path:
    folder = tmp_path / "ct5n"
    shutil.copytree(DICOM_DIRS / "98892001" / "CT5N", folder)
    return folder


def test_dicom_series_from_pydicom_sorted_by_position(tmp_path: Path) -> None:
    folder = series_copy(tmp_path)
    image = read_image(folder)
    assert image.array.shape == (16, 16, 5)
    z = [float(ds.ImagePositionPatient[2]) for ds in image.header]
    assert z == sorted(z) and np.allclose(np.diff(z), 2.5)
    np.testing.assert_allclose(image.affine[:3, 2], [0.0, 0.0, 2.5], atol=1e-6)
    for k, ds in enumerate(image.header):
        raw = pydicom.dcmread(ds.filename)
        np.testing.assert_array_equal(
            image.array[..., k], raw.pixel_array * raw.RescaleSlope + raw.RescaleIntercept
        )

    out = write_like(image.array, image, tmp_path / "map")
    files = sorted(out.iterdir())
    assert [f.name for f in files] == [f"IM{k:05d}.dcm" for k in range(1, 6)]
    uids = {pydicom.dcmread(f).SeriesInstanceUID for f in files}
    assert len(uids) == 1 and uids != {image.header[0].SeriesInstanceUID}
    back = read_image(out)
    np.testing.assert_allclose(back.affine, image.affine, atol=1e-6)
    assert np.abs(back.array - image.array).max() <= np.ptp(image.array) / 131070 + 1e-3

    mask = image.array > image.array.mean()
    np.testing.assert_array_equal(read_image(write_like(mask, image, tmp_path / "m")).array, mask)
    rerun = write_like(image.array * 0.5, image, tmp_path / "map")  # a rerun replaces its files
    assert len(list(rerun.iterdir())) == 5 and read_image(rerun).array.max() > 0


def test_dicom_series_built_from_mr_small_oblique_and_shuffled(tmp_path: Path) -> None:
    base = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    pixels = base.pixel_array.copy()  # before the copies below invalidate the shared cache
    row, col = np.array([0.8, 0.6, 0.0]), np.array([0.0, 0.0, -1.0])  # a coronal-oblique plane
    normal = np.cross(row, col)
    folder = tmp_path / "series"
    folder.mkdir()
    for k in (2, 0, 3, 1):  # files written out of order, with a non-DICOM file beside them
        ds = copy.deepcopy(base)
        ds.ImageOrientationPatient = [*row, *col]
        ds.ImagePositionPatient = list(np.array([5.0, -3.0, 40.0]) + 2.0 * k * normal)
        ds.SOPInstanceUID = pydicom.uid.generate_uid()
        ds.PixelData = (pixels + 100 * k).astype(np.uint16).tobytes()
        ds.save_as(folder / f"slice_{3 - k}.dcm")
    (folder / "README.txt").write_text("not DICOM")

    image = read_image(folder)
    assert image.array.shape == (64, 64, 4)
    for k in range(4):
        np.testing.assert_array_equal(image.array[..., k], pixels + 100 * k)
    np.testing.assert_allclose(image.affine[:3, 2], 2.0 * normal * [-1, -1, 1], atol=1e-5)
    np.testing.assert_allclose(ras_of(image.affine, (0, 0, 0)), [-5.0, 3.0, 40.0], atol=1e-5)


@pytest.mark.parametrize(
    ("folder", "message"),
    [
        ("98892003/MR2", r"MR2: folder holds 3 series \(1\.3\.6\.1.*0\.136, .*0\.17, .*0\.481\)"),
        ("98892003/MR700", r"MR700/\d+: ImageOrientationPatient .* differs"),
        ("98892001/CT2N", r"CT2N/\d+: ImageOrientationPatient .* differs"),
        ("77654033/CT2", r"CT2: slices are not evenly spaced \(gaps from 1\.25 to 202\.5 mm\)"),
    ],
)
def test_malformed_dicom_series_from_pydicom(folder: str, message: str) -> None:
    with pytest.raises(AnodiffError, match=message):
        read_image(DICOM_DIRS / folder)


def test_dicom_writers_refuse_the_input_and_foreign_files(tmp_path: Path) -> None:
    folder = series_copy(tmp_path)
    image = read_image(folder)
    with pytest.raises(AnodiffError, match=r"ct5n: refusing to overwrite the input"):
        write_like(image.array, image, folder)
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("x")
    with pytest.raises(AnodiffError, match=r"busy: folder holds other files \(notes\.txt\)"):
        write_like(image.array, image, busy)
    single = read_image(get_testdata_file("MR_small.dcm"))
    with pytest.raises(AnodiffError, match=r"MR_small\.dcm: refusing to overwrite"):
        write_like(single.array, single, single.path)


def test_corrupt_dicom_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(AnodiffError, match=r"MR_truncated\.dcm: cannot decode DICOM pixel data"):
        read_image(get_testdata_file("MR_truncated.dcm"))
    (tmp_path / "junk.dcm").write_bytes(b"\x00" * 64)
    with pytest.raises(AnodiffError, match=r"junk\.dcm: "):
        read_image(tmp_path / "junk.dcm")
    (tmp_path / "empty").mkdir()
    with pytest.raises(AnodiffError, match=r"empty: folder holds no DICOM images"):
        read_image(tmp_path / "empty")


def test_extensionless_dicom_is_recognised() -> None:
    path = DICOM_DIRS / "98892001" / "CT5N" / "2062"
    assert image_format(path) == "dicom"
    assert read_image(path).array.shape == (16, 16)


# ---- PNG / JPEG / TIFF / NPY ---------------------------------------------------------------


def test_png_8_and_16_bit_and_rgb(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    grey8 = rng.integers(0, 256, (9, 11), dtype=np.uint8)
    grey16 = rng.integers(0, 65536, (9, 11), dtype=np.uint16)
    rgb = rng.integers(0, 256, (9, 11, 3), dtype=np.uint8)
    for name, data in (("g8.png", grey8), ("g16.png", grey16), ("rgb.png", rgb)):
        PILImage.fromarray(data).save(tmp_path / name)
        image = read_image(tmp_path / name)
        np.testing.assert_array_equal(image.array, data.astype(np.float32))
        assert image.rgb == (data.ndim == 3) and image.spatial_shape == (9, 11)
        np.testing.assert_array_equal(image.affine, np.eye(4))

    ref = read_image(tmp_path / "rgb.png")
    heat = rng.uniform(-0.2, 1.2, (9, 11))
    out = write_like(heat, ref, tmp_path / "heat.png")
    assert out.read_bytes()[24] == 16  # the IHDR bit depth (Pillow < 10.4 opens it as "I")
    back = read_image(out).array / 65535.0
    assert np.abs(back - np.clip(heat, 0, 1)).max() <= 1.0 / 131070 + 1e-7
    mask = heat > 0.5
    np.testing.assert_array_equal(
        read_image(write_like(mask, ref, tmp_path / "m.png")).array, mask * 255.0
    )


def test_jpeg_reference_is_answered_with_png(tmp_path: Path) -> None:
    PILImage.fromarray(np.full((8, 8), 128, np.uint8)).save(tmp_path / "x.jpg")
    ref = read_image(tmp_path / "x.jpg")
    assert ref.format == "jpeg"
    out = write_like(np.full((8, 8), 0.25), ref, tmp_path / "x.jpg")
    assert out == tmp_path / "x.png" and (tmp_path / "x.jpg").exists()
    assert np.allclose(read_image(out).array / 65535.0, 0.25, atol=1e-5)


def test_tiff_float_is_lossless(tmp_path: Path) -> None:
    data = np.random.default_rng(2).normal(size=(6, 7)).astype(np.float32)
    PILImage.fromarray(data).save(tmp_path / "f.tif")
    ref = read_image(tmp_path / "f.tif")
    np.testing.assert_array_equal(ref.array, data)
    out = write_like(data * 3.0, ref, tmp_path / "map.tiff")
    np.testing.assert_array_equal(read_image(out).array, data * 3.0)


def test_npy_volume_and_image(tmp_path: Path) -> None:
    volume = np.random.default_rng(3).normal(size=(4, 5, 6))
    np.save(tmp_path / "v.npy", volume)
    ref = read_image(tmp_path / "v.npy")
    assert ref.array.shape == (4, 5, 6) and ref.spacing == (1.0, 1.0, 1.0)
    out = write_like(ref.array + 1.0, ref, tmp_path / "map.npy")
    np.testing.assert_array_equal(np.load(out), ref.array + 1.0)


# ---- errors --------------------------------------------------------------------------------


def test_missing_and_unknown_files(tmp_path: Path) -> None:
    with pytest.raises(AnodiffError, match=r"nope\.nii\.gz: file not found"):
        read_image(tmp_path / "nope.nii.gz")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(AnodiffError, match=r"notes\.txt: unsupported file type"):
        read_image(tmp_path / "notes.txt")


@pytest.mark.parametrize(
    ("name", "content", "what"),
    [
        ("bad.nii.gz", b"\x1f\x8b garbage", "NIfTI"),
        ("bad.nii", b"0" * 400, "NIfTI"),
        ("bad.nrrd", b"NRRD0004\ntype: what\n\n", "NRRD"),
        ("bad.png", b"\x89PNG\r\n\x1a\nxxxxxxxx", "image"),
        ("bad.tif", b"II*\x00garbage", "image"),
        ("bad.npy", b"\x93NUMPY garbage", "NumPy"),
    ],
)
@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")
def test_corrupt_files_are_named(tmp_path: Path, name: str, content: bytes, what: str) -> None:
    (tmp_path / name).write_bytes(content)
    with pytest.raises(AnodiffError, match=re.escape(f"{name}: unreadable {what} file")):
        read_image(tmp_path / name)


def test_truncated_png_is_named(tmp_path: Path) -> None:
    PILImage.fromarray(np.zeros((32, 32), np.uint8) + 7).save(tmp_path / "full.png")
    (tmp_path / "cut.png").write_bytes((tmp_path / "full.png").read_bytes()[:60])
    with pytest.raises(AnodiffError, match=r"cut\.png: unreadable image file"):
        read_image(tmp_path / "cut.png")


def test_pickled_npy_is_not_unpickled(tmp_path: Path) -> None:
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(AnodiffError, match=r"obj\.npy: unreadable NumPy file"):
        read_image(tmp_path / "obj.npy")


def test_non_finite_empty_and_wrong_rank(tmp_path: Path) -> None:
    data = np.ones((5, 5, 5), np.float32)
    data[0, 0, :3] = np.nan
    data[1, 1, 1] = np.inf
    nib.save(nib.Nifti1Image(data, np.eye(4)), tmp_path / "nan.nii.gz")
    with pytest.raises(AnodiffError, match=r"nan\.nii\.gz: 4 NaN/Inf voxels out of 125"):
        read_image(tmp_path / "nan.nii.gz")
    np.save(tmp_path / "empty.npy", np.zeros((0, 4)))
    with pytest.raises(AnodiffError, match=r"empty\.npy: empty image \(shape \(0, 4\)\)"):
        read_image(tmp_path / "empty.npy")
    np.save(tmp_path / "four.npy", np.zeros((2, 3, 4, 5)))
    with pytest.raises(AnodiffError, match=r"four\.npy: 4-D image of shape \(2, 3, 4, 5\)"):
        read_image(tmp_path / "four.npy")
    np.save(tmp_path / "line.npy", np.zeros(7))
    with pytest.raises(AnodiffError, match=r"line\.npy: 1-D array"):
        read_image(tmp_path / "line.npy")


def test_write_like_refusals(tmp_path: Path) -> None:
    nib.save(nib.Nifti1Image(np.ones((3, 4, 5), np.float32), np.eye(4)), tmp_path / "in.nii.gz")
    ref = read_image(tmp_path / "in.nii.gz")
    with pytest.raises(AnodiffError, match=r"in\.nii\.gz: refusing to overwrite the input"):
        write_like(ref.array, ref, tmp_path / "in.nii.gz")
    with pytest.raises(AnodiffError, match=r"out\.png: extension names png .* is nifti"):
        write_like(ref.array, ref, tmp_path / "out.png")
    with pytest.raises(AnodiffError, match=r"out\.nii\.gz: array of shape \(3, 4\) does not fit"):
        write_like(np.zeros((3, 4)), ref, tmp_path / "out.nii.gz")
    bad = np.zeros((3, 4, 5))
    bad[0, 0, 0] = np.nan
    with pytest.raises(AnodiffError, match=r"out\.nii\.gz: refusing to write 1 NaN/Inf"):
        write_like(bad, ref, tmp_path / "out.nii.gz")
