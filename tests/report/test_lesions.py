"""The lesion table: components, volumes, centroids and boxes against scipy and nibabel."""

import csv
import io

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from anodiff.errors import AnodiffError
from anodiff.report.lesions import LESION_COLUMNS, lesion_csv, lesion_table


def oblique(spacing: tuple[float, float, float]) -> np.ndarray:
    """An affine rotated about two axes, anisotropic voxels, an offset."""
    a, b = np.deg2rad(17.0), np.deg2rad(-28.0)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    affine = np.eye(4)
    affine[:3, :3] = rz @ rx @ np.diag(spacing)
    affine[:3, 3] = [-91.5, 12.25, 40.0]
    return affine


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_volumes_match_scipy_labels_and_the_nifti_header_spacing(seed: int, tmp_path) -> None:
    rng = np.random.default_rng(seed)
    field = ndimage.gaussian_filter(rng.normal(size=(30, 26, 18)), 1.5)
    mask = field > np.quantile(field, 0.93)  # blobs of several sizes
    spacing = tuple(rng.uniform(0.4, 3.0, 3))
    nib.save(nib.Nifti1Image(mask.astype(np.uint8), oblique(spacing)), tmp_path / "m.nii.gz")
    header = nib.load(tmp_path / "m.nii.gz")
    voxel_ml = float(np.prod(header.header.get_zooms())) / 1000.0
    labels, count = ndimage.label(header.get_fdata() > 0, np.ones((3, 3, 3)))
    reference = sorted((np.bincount(labels.ravel())[1:] * voxel_ml).tolist(), reverse=True)
    rows = lesion_table(mask, rng.uniform(size=mask.shape), header.affine)
    assert count > 3 and len(rows) == count
    np.testing.assert_allclose([r["volume_ml"] for r in rows], reference, rtol=0, atol=1e-6)
    assert [r["lesion"] for r in rows] == list(range(1, count + 1))


def test_centroid_box_and_map_values_of_known_blobs() -> None:
    affine = oblique((1.2, 0.9, 2.5))
    mask = np.zeros((20, 20, 10), dtype=bool)
    mask[2:5, 3:6, 1:4] = True  # 27 voxels, centre (3, 4, 2)
    mask[10, 12, 7] = True  # one voxel, touching nothing
    mask[11, 13, 8] = True  # a diagonal neighbour: one component of 2 under 26-connectivity
    amap = np.zeros(mask.shape, dtype=np.float32)
    amap[2:5, 3:6, 1:4] = np.arange(27, dtype=np.float32).reshape(3, 3, 3)
    spread = np.full(mask.shape, 0.25, dtype=np.float32)
    big, small = lesion_table(mask, amap, affine, spread)
    assert (big["voxels"], small["voxels"]) == (27, 2)
    expected = affine @ np.array([3.0, 4.0, 2.0, 1.0])
    got = [big[f"centroid_{a}_mm"] for a in "ras"]
    np.testing.assert_allclose(got, expected[:3], atol=1e-9)
    assert [big[f"centroid_{a}"] for a in "ijk"] == [3.0, 4.0, 2.0]
    assert [(big[f"box_{a}_min"], big[f"box_{a}_max"]) for a in "ijk"] == [(2, 4), (3, 5), (1, 3)]
    assert [(small[f"box_{a}_min"], small[f"box_{a}_max"]) for a in "ijk"] == [
        (10, 11), (12, 13), (7, 8)]
    assert big["peak_map"] == 26.0 and big["mean_map"] == pytest.approx(13.0)
    assert big["mean_uncertainty"] == pytest.approx(0.25)
    assert big["volume_ml"] == pytest.approx(27 * 1.2 * 0.9 * 2.5 / 1000)


def test_a_2_d_image_has_areas_in_pixels_and_no_world_position() -> None:
    mask = np.zeros((8, 9), dtype=bool)
    mask[1:3, 1:4] = True
    (row,) = lesion_table(mask, mask.astype(float), np.eye(4))
    assert row["voxels"] == 6 and row["volume_ml"] is None and row["centroid_r_mm"] is None
    assert (row["centroid_i"], row["centroid_j"], row["centroid_k"]) == (1.5, 2.0, None)
    assert row["mean_uncertainty"] is None


def test_csv_has_every_column_and_a_header_alone_without_lesions() -> None:
    assert lesion_csv([]).strip() == ",".join(LESION_COLUMNS)
    mask = np.zeros((5, 5, 5), dtype=bool)
    mask[1:3, 1:3, 1:3] = True
    rows = lesion_table(mask, np.ones(mask.shape), np.diag([0.7, 0.7, 3.3, 1.0]))
    (read,) = csv.DictReader(io.StringIO(lesion_csv(rows)))
    assert float(read["volume_ml"]) == pytest.approx(8 * 0.7 * 0.7 * 3.3 / 1000, abs=1e-12)
    assert read["mean_uncertainty"] == "" and read["lesion"] == "1"


def test_mismatched_inputs_are_named() -> None:
    with pytest.raises(AnodiffError, match=r"the anomaly map has shape \(4, 4\), the mask"):
        lesion_table(np.zeros((4, 4, 2), bool), np.zeros((4, 4)), np.eye(4))
    with pytest.raises(AnodiffError, match="expected a 2-D or 3-D mask"):
        lesion_table(np.zeros(4, bool), np.zeros(4), np.eye(4))
