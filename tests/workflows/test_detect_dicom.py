"""detect on a DICOM series: a DICOM SEG and Parametric Maps that reference the source
series (same study, frame of reference and per-frame geometry), checked by reading them back
with highdicom and pydicom."""

import copy
from pathlib import Path

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import ParametricMapStorage, SegmentationStorage

from anodiff.data.io import read_image
from anodiff.errors import AnodiffError
from anodiff.workflows.detect import detect_inputs
from anodiff.workflows.run import train_run

SLICES = 5


def write_series(folder: Path) -> list[pydicom.Dataset]:
    """An oblique MR series of MR_small's pixels, a bright block in slices 1-3."""
    base = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    pixels = base.pixel_array.astype(np.float64)
    row, col = np.array([0.8, 0.6, 0.0]), np.array([0.0, 0.0, -1.0])
    normal = np.cross(row, col)
    folder.mkdir(parents=True)
    series_uid = pydicom.uid.generate_uid()
    written = []
    for k in range(SLICES):
        ds = copy.deepcopy(base)
        ds.SeriesInstanceUID = series_uid
        ds.ImageOrientationPatient = [*row, *col]
        ds.ImagePositionPatient = [float(v) for v in np.array([5.0, -3.0, 40.0]) + 3 * k * normal]
        ds.SOPInstanceUID = pydicom.uid.generate_uid()
        ds.InstanceNumber = k + 1
        image = pixels.copy()
        if 1 <= k <= 3:
            image[20:30, 25:35] = 4000.0
        ds.PixelData = image.astype(np.uint16).tobytes()
        ds.save_as(folder / f"slice{k}.dcm")
        written.append(ds)
    return written


@pytest.fixture(scope="module")
def dicom_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list]:
    """A one-sequence FLAIR threshold run trained on healthy NIfTI cases, and the series."""
    root = tmp_path_factory.mktemp("dicom")
    rng = np.random.default_rng(0)
    for i in range(3):
        folder = root / "DATA" / f"case{i}"
        folder.mkdir(parents=True)
        volume = rng.normal(800, 80, (24, 24, 6)).clip(1).astype(np.float32)
        nib.save(nib.Nifti1Image(volume, np.diag([3.0, 3.0, 3.0, 1.0])),
                 folder / f"case{i}_flair.nii.gz")
    train_run("threshold", root / "DATA", root / "run", preset="quick",
              values={"data": {"size": 16}, "method": {"mode": "bright"}})
    sources = write_series(root / "inputs" / "mr")
    return root / "run", root / "inputs" / "mr", sources


def test_a_dicom_series_gets_a_seg_and_parametric_maps_on_its_frames(
        dicom_run: tuple[Path, Path, list], tmp_path: Path) -> None:
    run, series, sources = dicom_run
    report = detect_inputs(run, [series], tmp_path / "both", progress=False,
                           dicom_output="both")
    assert not report.failures, report.failures
    out = tmp_path / "both"
    image = read_image(series)
    mask = read_image(out / "mr_mask").array > 0  # the image-series outputs, as before
    amap = read_image(out / "mr_anomaly_map").array
    seg = hd.seg.segread(out / "mr_mask_seg.dcm")
    assert seg.SOPClassUID == SegmentationStorage
    assert seg.FrameOfReferenceUID == sources[0].FrameOfReferenceUID
    assert seg.StudyInstanceUID == sources[0].StudyInstanceUID
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == sources[0].SeriesInstanceUID
    positions = [[float(v) for v in ds.ImagePositionPatient] for ds in image.header]
    assert int(seg.NumberOfFrames) == int(mask.any(axis=(0, 1)).sum()) >= 3  # empty left out
    by_position = {tuple(np.round(f.PlanePositionSequence[0].ImagePositionPatient, 3)): n
                   for n, f in enumerate(seg.PerFrameFunctionalGroupsSequence)}
    pixels = seg.pixel_array
    for k, position in enumerate(positions):
        key = tuple(np.round(position, 3))
        if mask[..., k].any():
            np.testing.assert_array_equal(pixels[by_position[key]], mask[..., k])
        else:
            assert key not in by_position

    pmap = pydicom.dcmread(out / "mr_anomaly_map_pm.dcm")
    assert pmap.SOPClassUID == ParametricMapStorage
    assert pmap.FrameOfReferenceUID == sources[0].FrameOfReferenceUID
    assert int(pmap.NumberOfFrames) == SLICES
    values = np.frombuffer(pmap.FloatPixelData, dtype="<f4").reshape(SLICES, 64, 64)
    for n, group in enumerate(pmap.PerFrameFunctionalGroupsSequence):
        position = [float(v) for v in group.PlanePositionSequence[0].ImagePositionPatient]
        k = int(np.argmin([np.abs(np.subtract(position, p)).max() for p in positions]))
        np.testing.assert_allclose(position, positions[k], atol=1e-3)
        tolerance = np.ptp(amap) / 131070 + 1e-4  # the image series' uint16 steps
        np.testing.assert_allclose(values[n], amap[..., k], atol=tolerance)
    assert (out / "mr_lesions.csv").is_file()


def test_objects_are_the_default_and_series_stay_an_option(
        dicom_run: tuple[Path, Path, list], tmp_path: Path) -> None:
    run, series, _ = dicom_run
    detect_inputs(run, [series], tmp_path / "objects", progress=False)
    assert sorted(p.name for p in (tmp_path / "objects").iterdir()) == [
        "mr_anomaly_map_pm.dcm", "mr_lesions.csv", "mr_mask_seg.dcm", "scores.csv"]
    detect_inputs(run, [series], tmp_path / "series", progress=False, dicom_output="series")
    assert sorted(p.name for p in (tmp_path / "series").iterdir()) == [
        "mr_anomaly_map", "mr_lesions.csv", "mr_mask", "scores.csv"]
    with pytest.raises(AnodiffError, match="--dicom-output must be one of objects, series"):
        detect_inputs(run, [series], tmp_path / "bad", progress=False, dicom_output="seg")
