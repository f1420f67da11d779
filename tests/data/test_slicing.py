"""Tests for anodiff.data.slicing, and the geometry round trip through io + slicing + fitting."""

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from anodiff.data.io import read_image, write_like
from anodiff.data.normalise import fit_to_size, unfit
from anodiff.data.slicing import (
    DropEnds,
    ForegroundExtent,
    axial_axis,
    context_names,
    context_offsets,
    slices_to_volume,
    stack_sequences,
    take_slices,
    volume_to_slices,
    with_context,
)
from anodiff.errors import AnodiffError

RAS = np.eye(4)
LPS = np.diag([-1.0, -1.0, 1.0, 1.0])  # BraTS-like NIfTI: x to the left, y to the back
DICOM_AXIAL = np.array([[0, -1.0, 0, 0], [-1.0, 0, 0, 0], [0, 0, 1.0, 0], [0, 0, 0, 1]])


def oblique_affine() -> np.ndarray:
    """Voxel axis 1 is (mostly) superior, 20/35 degree rotations, spacing 0.9/1.3/2.5 mm."""
    a, b = np.deg2rad(20.0), np.deg2rad(-35.0)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    swap = np.array([[1.0, 0, 0], [0, 0, 1.0], [0, -1.0, 0]]).T  # voxel y -> S, voxel z -> P
    affine = np.eye(4)
    affine[:3, :3] = rz @ rx @ swap @ np.diag([0.9, 1.3, 2.5])
    affine[:3, 3] = [-40.0, 12.5, 7.0]
    return affine


def test_axial_axis_comes_from_the_affine() -> None:
    assert axial_axis(RAS) == 2
    assert axial_axis(oblique_affine()) == 1
    permuted = RAS[:, [2, 0, 1, 3]]  # voxel axis 0 runs along S
    assert axial_axis(permuted) == 0


@pytest.mark.parametrize(
    ("affine", "view"),
    [
        (RAS, lambda v, z: v[::-1, ::-1, z].T),  # rows: A -> P, columns: R -> L
        (LPS, lambda v, z: v[:, :, z].T),
        (DICOM_AXIAL, lambda v, z: v[:, :, z]),  # a DICOM axial series is already in view
    ],
)
def test_slices_are_in_radiological_view(affine: np.ndarray, view) -> None:
    volume = np.random.default_rng(0).normal(size=(4, 5, 3))
    slices, layout = volume_to_slices(volume, affine)
    assert slices.shape == (3, *view(volume, 0).shape)
    for k in range(3):
        np.testing.assert_array_equal(slices[k], view(volume, k))
    np.testing.assert_array_equal(slices_to_volume(slices, layout), volume)


def test_slices_run_inferior_to_superior() -> None:
    volume = np.arange(2 * 2 * 4, dtype=float).reshape(2, 2, 4)
    flipped_s = np.diag([1.0, 1.0, -2.0, 1.0])
    _, layout = volume_to_slices(volume, flipped_s)
    np.testing.assert_array_equal(layout.indices, [3, 2, 1, 0])


def test_drop_ends_is_wolleb_brats_range_in_world_terms() -> None:
    volume = np.ones((2, 2, 155))
    _, layout = volume_to_slices(volume, RAS, keep=DropEnds(inferior=80, superior=26))
    np.testing.assert_array_equal(layout.indices, np.arange(80, 129))
    _, layout = volume_to_slices(volume, np.diag([1, 1, -1, 1.0]), DropEnds(80, 26))
    np.testing.assert_array_equal(layout.indices, np.arange(74, 25, -1))  # 154-80 down to 26
    with pytest.raises(AnodiffError, match="leaves no slice of a volume with 155"):
        volume_to_slices(volume, RAS, keep=DropEnds(100, 55))


def test_foreground_extent_drops_small_end_slices() -> None:
    volume = np.zeros((10, 10, 6))
    areas = [0, 4, 25, 36, 16, 1]
    for z, area in enumerate(areas):
        side = int(np.sqrt(area))
        volume[:side, :side, z] = 1.0
    _, layout = volume_to_slices(volume, RAS, keep=ForegroundExtent(0.2))
    np.testing.assert_array_equal(layout.indices, [2, 3, 4])  # area >= 0.2 * 36


def test_channels_and_companion_volumes_share_the_layout() -> None:
    rng = np.random.default_rng(2)
    stacked = stack_sequences({"t2": rng.normal(size=(4, 5, 6)), "t1": rng.normal(size=(4, 5, 6))})
    seg = rng.uniform(size=(4, 5, 6)) > 0.5
    slices, layout = volume_to_slices(stacked, LPS, keep=DropEnds(1, 2))
    assert slices.shape == (3, 2, 5, 4)
    masks = take_slices(seg, layout)
    np.testing.assert_array_equal(masks[0], seg[:, :, 1].T)
    back = slices_to_volume(slices, layout)
    np.testing.assert_array_equal(back[:, :, :, 1:4], stacked[:, :, :, 1:4])
    assert np.all(back[..., [0, 4, 5]] == 0)
    np.testing.assert_array_equal(slices_to_volume(masks, layout)[..., 1:4], seg[..., 1:4])


def test_stack_sequences_order_and_shape_check() -> None:
    a, b = np.zeros((2, 2, 2)), np.ones((2, 2, 2))
    np.testing.assert_array_equal(stack_sequences({"b": b, "a": a}, order=["b", "a"])[0], b)
    with pytest.raises(AnodiffError, match=r"sequences differ in shape: .*'flair': \(2, 2, 3\)"):
        stack_sequences({"t1": a, "flair": np.zeros((2, 2, 3))})
    with pytest.raises(AnodiffError, match=r"sequences \['t2'\] not among"):
        stack_sequences({"t1": a}, order=["t2"])


@pytest.mark.parametrize("size", [None, 32])
def test_geometry_round_trip_through_nifti(tmp_path: Path, size: int | None) -> None:
    """Oblique NIfTI -> slices (-> fit/unfit) -> mark a voxel -> volume -> write_like -> read."""
    affine = oblique_affine()
    volume = np.random.default_rng(3).uniform(size=(13, 9, 11)).astype(np.float32)
    nib.save(nib.Nifti1Image(volume, affine), tmp_path / "in.nii.gz")
    image = read_image(tmp_path / "in.nii.gz")
    slices, layout = volume_to_slices(image.array, image.affine, keep=DropEnds(1, 1))
    assert layout.axis == 1 and slices.shape[0] == 7

    maps = np.zeros_like(slices)
    k, r, c = 4, 2, 8
    if size is not None:  # the model sees 32 x 32 slices padded from the 11 x 13 plane
        fitted = fit_to_size(maps, size, "pad")
        top, left = (size - maps.shape[1]) // 2, (size - maps.shape[2]) // 2
        fitted[k, top + r, left + c] = 1.0
        maps = unfit(fitted, layout.plane_shape, "pad")
    else:
        maps[k, r, c] = 1.0
    marked = slices_to_volume(maps, layout)
    voxel = tuple(int(i) for i in np.argwhere(marked == 1.0)[0])
    assert marked.sum() == 1.0 and voxel[layout.axis] == layout.indices[k]
    assert slices[k, r, c] == image.array[voxel]  # the same voxel the model saw

    out = write_like(marked, image, tmp_path / "map.nii.gz")
    back = read_image(out)
    assert back.array.shape == image.array.shape
    np.testing.assert_allclose(back.affine, image.affine, atol=1e-6)
    back_voxel = tuple(np.argwhere(back.array == 1.0)[0])
    np.testing.assert_allclose(
        back.affine @ [*back_voxel, 1.0], image.affine @ [*voxel, 1.0], atol=1e-6
    )


@pytest.mark.parametrize("affine", [RAS, np.diag([1.0, 1.0, -2.0, 1.0])])
def test_context_channels_are_the_neighbouring_slices_of_the_whole_volume(affine) -> None:
    """Each kept slice carries the slices one and two below and above it (inferior ->
    superior in world terms, whatever the voxel order), taken from the whole volume (a
    pruned neighbour still comes in) and repeated at the volume's ends."""
    volume = np.random.default_rng(3).normal(size=(2, 3, 4, 7)).astype(np.float32)
    full, _ = volume_to_slices(volume, affine)  # all 7 slices, inferior -> superior
    kept, layout = volume_to_slices(volume, affine, keep=DropEnds(1, 2), context=2)
    assert kept.shape == (4, 2 * 5, 4, 3) and len(layout.indices) == 4
    for row, position in enumerate(range(1, 5)):  # positions 1..4 of 0..6 are kept
        np.testing.assert_array_equal(kept[row, :2], full[position])
        for k, offset in enumerate(context_offsets(2)):
            neighbour = full[min(max(position + offset, 0), 6)]
            np.testing.assert_array_equal(kept[row, 2 + 2 * k: 4 + 2 * k], neighbour)
    back = slices_to_volume(kept[:, :2], layout)  # the centre channels go back as ever
    np.testing.assert_array_equal(back[..., layout.indices], volume[..., layout.indices])


def test_context_of_slices_cut_from_a_volume_repeats_the_ends() -> None:
    slices = np.arange(4, dtype=np.float32).reshape(4, 1, 1, 1) * np.ones((4, 2, 3, 3))
    made = with_context(slices, 1)
    assert made.shape == (4, 6, 3, 3)
    np.testing.assert_array_equal(made[:, ::2, 0, 0], [[0, 0, 1], [1, 0, 2], [2, 1, 3],
                                                       [3, 2, 3]])
    assert with_context(slices, 0) is slices
    assert context_names(("flair", "t1"), 1) == ("flair", "t1", "flair@-1", "t1@-1",
                                                 "flair@+1", "t1@+1")
    with pytest.raises(AnodiffError, match="context must be >= 0"):
        context_offsets(-1)
