"""Tests for anodiff.data.datasets: both layouts, regimes, reassembly, validation, skipping."""

import logging
from dataclasses import replace
from pathlib import Path

import nibabel as nib
import nrrd
import numpy as np
import pytest
import torch
from PIL import Image as PILImage

from anodiff.data.datasets import UNLABELLED, open_cases, open_dataset
from anodiff.data.io import read_image, write_like
from anodiff.data.slicing import DropEnds
from anodiff.errors import AnodiffError

SHAPE = (12, 14, 10)
AFFINE = np.array(
    [[-1.2, 0, 0, 10.0], [0, -1.0, 0, 20.0], [0, 0, 2.0, -30.0], [0, 0, 0, 1]]
)  # LPS-like, as BraTS NIfTIs


def brain() -> np.ndarray:
    g = np.indices(SHAPE).astype(float)
    return (g[0] - 6) ** 2 / 25 + (g[1] - 7) ** 2 / 30 + (g[2] - 5) ** 2 / 16 < 1


def save(array: np.ndarray, path: Path, affine: np.ndarray = AFFINE) -> None:
    nib.save(nib.Nifti1Image(array, affine), path)


def make_case(root: Path, case: str, *, lesion: bool, seed: int, sequences=("t1", "flair")) -> None:
    folder = root / case
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for seq in sequences:
        volume = np.where(brain(), rng.uniform(50, 100, SHAPE), 0.0).astype(np.float32)
        save(volume, folder / f"{case}_{seq}.nii.gz")
    seg = np.zeros(SHAPE, np.uint8)
    if lesion:
        seg[5:7, 6:8, 4:6] = 2  # BraTS-style label values are fine: > 0 is lesion
    save(seg, folder / f"{case}_seg.nii.gz")


@pytest.fixture
def volumes(tmp_path: Path) -> Path:
    root = tmp_path / "DATA"
    for i, lesion in enumerate([False, True, False, True]):
        make_case(root, f"case{i}", lesion=lesion, seed=i)
    (root / "splits.csv").write_text(
        "case,split\ncase0,train\ncase1,train\ncase2,val\ncase3,test\n"
    )
    return root


def test_volumes_layout(volumes: Path) -> None:
    data = open_dataset(volumes, size=16, fit="pad")
    assert data.sequences == ("flair", "t1")
    assert data.images.shape == (len(data), 2, 16, 16) and data.images.dtype == np.float32
    assert data.images.min() >= 0.0 and data.images.max() == 1.0
    assert data.case_ids == ["case0", "case1", "case2", "case3"]
    assert set(data.split("val").cases) == {"case2"}
    # slice labels: 1 exactly on the lesion's axial slices (voxel z 4 and 5)
    lesioned = data.labels == 1
    assert set(data.cases[lesioned]) == {"case1", "case3"}
    np.testing.assert_array_equal(np.sort(data.indices[lesioned & (data.cases == "case1")]), [4, 5])
    assert np.array_equal(data.masks.any(axis=(1, 2)), lesioned)

    item = data[int(np.flatnonzero(lesioned)[0])]
    assert item["image"].shape == (2, 16, 16) and item["image"].dtype == torch.float32
    assert item["label"].dtype == torch.long and int(item["label"]) == 1
    assert item["mask"].dtype == torch.bool and item["mask"].shape == (16, 16)
    assert item["case"] == "case1" and item["index"] in (4, 5)


def test_regimes_follow_who_may_use_what(volumes: Path) -> None:
    data = open_dataset(volumes, size=16)
    for regime in ("unsupervised", "self"):
        seen = data.for_regime(regime)
        assert len(seen) > 0 and np.all(seen.labels == 0) and not seen.masks.any()
        assert set(seen.splits) == {"train"}
    weak = data.for_regime("weak")
    assert set(weak.labels) == {0, 1} and not weak.masks.any()
    assert len(weak) == len(data.split("train"))
    supervised = data.for_regime("supervised")
    assert supervised.masks.any() and np.array_equal(supervised.masks, data.split("train").masks)
    test = data.for_regime("supervised", split="test")
    assert set(test.cases) == {"case3"}
    with pytest.raises(AnodiffError, match="unknown supervision regime 'semisupervised'"):
        data.for_regime("semisupervised")


def test_the_semi_regime_gives_exactly_k_masks_and_nothing_else(volumes: Path) -> None:
    """Every train slice, but labels and masks only on k seeded slices with a lesion; the
    same seed picks the same slices, validation and test are never among them."""
    data = open_dataset(volumes, size=16)
    train = data.split("train")
    semi = data.for_regime("semi", labelled=2, seed=0)
    assert len(semi) == len(train) and np.array_equal(semi.images, train.images)
    labelled = semi.labels != UNLABELLED
    assert labelled.sum() == 2 and semi.masks[labelled].reshape(2, -1).any(1).all()
    assert not semi.masks[~labelled].any()  # no other mask leaks, nor any other label
    assert np.array_equal(semi.masks[labelled], train.masks[labelled])
    assert set(semi.splits) == {"train"}
    again = data.for_regime("semi", labelled=2, seed=0)
    assert np.array_equal(again.labels, semi.labels)
    lesioned = int(train.masks.reshape(len(train), -1).any(1).sum())
    with pytest.raises(AnodiffError, match=f"only {lesioned} slices of this split have a "
                                           "lesion"):
        data.for_regime("semi", labelled=lesioned + 1)


def test_reassemble_puts_maps_back_on_the_case_grid(volumes: Path, tmp_path: Path) -> None:
    data = open_dataset(volumes, size=16, fit="pad", keep=DropEnds(2, 2))
    rows = data.cases == "case1"
    volume = data.reassemble("case1", data.masks[rows])
    seg = read_image(volumes / "case1" / "case1_seg.nii.gz").array > 0
    assert volume.shape == SHAPE and volume.dtype == np.bool_
    np.testing.assert_array_equal(volume, seg)
    ref = data.reference_image("case1")
    assert ref.path == volumes / "case1" / "case1_flair.nii.gz"
    out = write_like(volume, ref, tmp_path / "case1_mask.nii.gz")
    np.testing.assert_array_equal(read_image(out).array > 0, seg)
    # resize mode comes back on the same grid too (resampled)
    resized = open_dataset(volumes, size=24, fit="resize")
    maps = resized.images[resized.cases == "case0", 0]
    assert resized.reassemble("case0", maps).shape == SHAPE


def test_mixed_formats_share_one_grid(volumes: Path) -> None:
    """An NRRD in LPS space with the NIfTI's geometry is accepted as a sequence."""
    folder = volumes / "case0"
    t2 = np.ones(SHAPE, np.float32)
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ AFFINE
    header = {"space": "LPS", "space directions": lps[:3, :3].T, "space origin": lps[:3, 3]}
    for case in ("case0", "case1", "case2", "case3"):
        nrrd.write(str(volumes / case / f"{case}_t2.nrrd"), t2, header)
    data = open_dataset(volumes, size=16)
    assert data.sequences == ("flair", "t1", "t2")
    (folder / "case0_t2.nrrd").unlink()  # one case lacks a sequence: never dropped silently
    with pytest.raises(AnodiffError, match=r"1 of 4 cases lack a sequence .*case0 lacks "
                                           r"\['t2 \(<case>/<case>_t2\.\*\)'\]"
                                           r".*data.on_missing=skip"):
        open_dataset(volumes, size=16)
    skipping = open_dataset(volumes, size=16, on_missing="skip")
    assert skipping.sequences == ("flair", "t1", "t2") and "case0" not in skipping.case_ids
    assert skipping.skipped == [("case0", "missing sequence(s) ['t2 (<case>/<case>_t2.*)']")]
    assert open_dataset(volumes, sequences=["flair", "t1"], size=16).sequences == ("flair", "t1")


def test_one_bad_case_is_skipped_and_reported(volumes: Path, caplog) -> None:
    (volumes / "case2" / "case2_t1.nii.gz").write_bytes(b"\x1f\x8b not a volume")
    with pytest.raises(AnodiffError, match=r"case2_t1\.nii\.gz: unreadable NIfTI file"):
        open_dataset(volumes, size=16)
    with caplog.at_level(logging.WARNING, logger="anodiff.data.datasets"):
        data = open_dataset(volumes, size=16, on_error="skip")
    assert data.case_ids == ["case0", "case1", "case3"]
    assert [case for case, _ in data.skipped] == ["case2"]
    assert "case2_t1.nii.gz: unreadable NIfTI file" in data.skipped[0][1]
    assert "skipping case2" in caplog.text
    assert data.split("train").skipped == data.skipped


def test_only_the_splits_asked_for_are_read(volumes: Path) -> None:
    (volumes / "case0" / "case0_t1.nii.gz").write_bytes(b"\x1f\x8b not a volume")  # train
    (volumes / "case1" / "case1_flair.nii.gz").unlink()  # train, and lacking a sequence
    data = open_dataset(volumes, size=16, only_splits=("test", "val"))  # neither is read
    assert data.case_ids == ["case2", "case3"] and not data.skipped
    whole = open_dataset(volumes, size=16, on_error="skip", on_missing="skip")
    np.testing.assert_array_equal(data.split("test").images, whole.split("test").images)
    (volumes / "splits.csv").write_text("case,split\n" + "".join(
        f"case{i},train\n" for i in range(4)))
    with pytest.raises(AnodiffError, match=r"DATA: no case in the test or val split "
                                           r"\(splits\.csv: case,split\)"):
        open_dataset(volumes, size=16, only_splits=("test", "val"))


def test_cases_are_read_one_at_a_time_as_asked_for(volumes: Path, caplog) -> None:
    """A case source reads nothing when opened; each() reads a case only when the next one is
    asked for, gives the slices the whole dataset has, and skips (or stops at) a bad case."""
    source = open_cases(volumes, size=16, on_error="skip")
    read: list[str] = []
    counted = replace(source, load=lambda key: read.append(key) or source.load(key))
    cases = counted.each()
    assert read == []
    first = next(cases)
    assert read == ["case0"] and first.case_ids == ["case0"]
    whole = source.dataset()
    np.testing.assert_array_equal(first.images, whole.select_cases(["case0"]).images)
    assert first.voxel_ml("case0") == whole.voxel_ml("case0")
    assert [c.case_ids for c in source.of_split("test").each()] == [["case3"]]
    (volumes / "case2" / "case2_t1.nii.gz").write_bytes(b"\x1f\x8b not a volume")
    with caplog.at_level(logging.WARNING, logger="anodiff.data.datasets"):
        assert [c.case_ids[0] for c in source.each()] == ["case0", "case1", "case3"]
    assert "skipping case2: " in caplog.text
    with pytest.raises(AnodiffError, match=r"case2_t1\.nii\.gz: unreadable NIfTI file"):
        list(replace(source, on_error="raise").each())


def test_nothing_loadable_still_fails(volumes: Path) -> None:
    with pytest.raises(AnodiffError, match=r"no case could be loaded .*missing sequence"):
        open_dataset(volumes, sequences=["t1", "dwi"], on_missing="skip")


# ---- malformed volume folders: each gives its named error ----------------------------------


def test_missing_sequence_names_case_and_sequence(volumes: Path) -> None:
    (volumes / "case3" / "case3_flair.nii.gz").unlink()
    with pytest.raises(AnodiffError, match=r"case3 lacks \['flair \(<case>/<case>_flair\.\*\)'\]"):
        open_dataset(volumes, sequences=["t1", "flair"])


def test_two_files_for_one_sequence_fail_only_that_case(volumes: Path) -> None:
    nrrd.write(str(volumes / "case1" / "case1_t1.nrrd"), np.ones(SHAPE, np.float32))
    with pytest.raises(AnodiffError, match=r"case case1: several files for sequence 't1'"):
        open_dataset(volumes)
    assert "case1" not in open_dataset(volumes, size=16, on_error="skip").case_ids


def test_shape_mismatch(volumes: Path) -> None:
    save(np.ones((12, 14, 9), np.float32), volumes / "case1" / "case1_t1.nii.gz")
    with pytest.raises(AnodiffError, match=r"case1_t1\.nii\.gz: shape \(12, 14, 9\) differs"):
        open_dataset(volumes)


def test_affine_mismatch_between_sequence_and_segmentation(volumes: Path) -> None:
    shifted = AFFINE.copy()
    shifted[0, 3] += 0.5
    save(np.zeros(SHAPE, np.uint8), volumes / "case0" / "case0_seg.nii.gz", shifted)
    with pytest.raises(AnodiffError, match=r"case0_seg\.nii\.gz: affine differs from case0_fl"):
        open_dataset(volumes)
    shifted[0, 3] = AFFINE[0, 3] + 1e-5  # within tolerance
    save(np.zeros(SHAPE, np.uint8), volumes / "case0" / "case0_seg.nii.gz", shifted)
    assert len(open_dataset(volumes, size=16)) > 0


def test_segmentation_must_be_a_label_map(volumes: Path) -> None:
    save(np.full(SHAPE, 0.5, np.float32), volumes / "case2" / "case2_seg.nii.gz")
    with pytest.raises(AnodiffError, match=r"case2_seg\.nii\.gz: not a label map"):
        open_dataset(volumes)


def test_required_masks_missing_or_empty(volumes: Path) -> None:
    with pytest.raises(AnodiffError, match=r"case0_seg\.nii\.gz: segmentation is empty"):
        open_dataset(volumes, require_masks=True)
    (volumes / "case0" / "case0_seg.nii.gz").unlink()
    with pytest.raises(AnodiffError, match=r"case case0: no segmentation"):
        open_dataset(volumes, require_masks=True)
    assert len(open_dataset(volumes, size=16)) > 0  # a healthy case may have no mask


def test_non_finite_and_4d_volumes(volumes: Path) -> None:
    bad = np.ones(SHAPE, np.float32)
    bad[1, 1, 1] = np.nan
    save(bad, volumes / "case1" / "case1_flair.nii.gz")
    with pytest.raises(AnodiffError, match=r"case1_flair\.nii\.gz: 1 NaN/Inf voxels"):
        open_dataset(volumes)
    save(np.ones((*SHAPE, 2), np.float32), volumes / "case1" / "case1_flair.nii.gz")
    with pytest.raises(AnodiffError, match=r"case1_flair\.nii\.gz: 4-D image of shape"):
        open_dataset(volumes)
    save(np.ones(SHAPE[:2], np.float32), volumes / "case1" / "case1_flair.nii.gz")
    with pytest.raises(AnodiffError, match=r"case1_flair\.nii\.gz: expected a 3-D volume"):
        open_dataset(volumes)


def test_splits_csv_problems(volumes: Path) -> None:
    csv = volumes / "splits.csv"
    csv.write_text("case,split\ncase0,train\ncase1,training\ncase2,val\ncase3,test\n")
    with pytest.raises(AnodiffError, match=r"splits\.csv:3: unknown split 'training' for 'case1'"):
        open_dataset(volumes)
    csv.write_text("case,split\ncase0,train\ncase1,train\ncase2,val\ncase3,test\ncase9,test\n")
    with pytest.raises(AnodiffError, match=r"splits\.csv: cases without a file: \['case9'\]"):
        open_dataset(volumes)
    csv.write_text("case,split\ncase0,train\ncase1,train\ncase2,val\n")
    with pytest.raises(AnodiffError, match=r"splits\.csv: no row for cases \['case3'\]"):
        open_dataset(volumes)
    csv.write_text("name,fold\ncase0,train\n")
    with pytest.raises(AnodiffError, match=r"splits\.csv: missing column\(s\) \['case', 'split'\]"):
        open_dataset(volumes)


def test_bad_options_fail_before_loading(volumes: Path) -> None:
    with pytest.raises(AnodiffError, match="unknown normalisation 'zscore'"):
        open_dataset(volumes, normalisation="zscore", on_error="skip")
    with pytest.raises(AnodiffError, match="fit must be one of"):
        open_dataset(volumes, fit="stretch")
    with pytest.raises(AnodiffError, match="nowhere: dataset folder not found"):
        open_dataset(volumes / "nowhere")


def test_context_slices_come_with_their_names_and_the_centre_stays_the_slice(
        volumes: Path) -> None:
    """2.5-D input: the slice's own channels first, then its neighbours' (named), the same
    slices, labels and masks as without context; subsets keep the context."""
    plain = open_dataset(volumes, size=16)
    data = open_dataset(volumes, size=16, context=1)
    assert data.sequences == ("flair", "t1", "flair@-1", "t1@-1", "flair@+1", "t1@+1")
    assert data.centre_sequences == plain.sequences == plain.centre_sequences
    np.testing.assert_array_equal(data.images[:, :2], plain.images)
    np.testing.assert_array_equal(data.masks, plain.masks)
    np.testing.assert_array_equal(data.indices, plain.indices)
    rows = np.flatnonzero((data.cases[1:] == data.cases[:-1])
                          & (data.indices[1:] == data.indices[:-1] + 1))
    assert len(rows) > 0
    np.testing.assert_array_equal(data.images[rows + 1, 2:4], plain.images[rows])
    np.testing.assert_array_equal(data.images[rows, 4:6], plain.images[rows + 1])
    assert data.split("train").healthy().options.context == 1


def test_context_is_refused_where_there_are_no_neighbours(volumes: Path, images: Path
                                                          ) -> None:
    with pytest.raises(AnodiffError, match="context must be 0 to 8 neighbouring slices"):
        open_dataset(volumes, context=9)
    with pytest.raises(AnodiffError, match="an images dataset has no neighbouring slices"):
        open_dataset(images, context=1)


# ---- images layout -------------------------------------------------------------------------


@pytest.fixture
def images(tmp_path: Path) -> Path:
    root = tmp_path / "IMG"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(5)
    for i in range(4):
        grey = rng.integers(20, 200, (20, 30), dtype=np.uint8)
        PILImage.fromarray(grey).save(root / "images" / f"x{i}.png")
        mask = np.zeros((20, 30), np.uint8)
        if i % 2:
            mask[8:12, 10:15] = 255
        PILImage.fromarray(mask).save(root / "masks" / f"x{i}.png")
    np.save(root / "images" / "x4.npy", rng.uniform(size=(20, 30)))  # no mask: label from csv
    (root / "labels.csv").write_text(
        "id,label,split\nx0,,train\nx1,,train\nx2,1,val\nx3,,test\nx4,0,train\n"
    )
    return root


def test_images_layout(images: Path, tmp_path: Path) -> None:
    data = open_dataset(images, size=32, fit="pad")
    assert data.case_ids == ["x0", "x1", "x2", "x3", "x4"]
    assert data.images.shape == (5, 1, 32, 32)
    np.testing.assert_array_equal(data.labels, [0, 1, 1, 1, 0])  # x2: the csv says 1
    np.testing.assert_array_equal(data.masks.any(axis=(1, 2)), [False, True, False, True, False])
    np.testing.assert_array_equal(data.splits, ["train", "train", "val", "test", "train"])
    assert data.sequences == ("image",)
    back = data.reassemble("x1", data.masks[data.cases == "x1"])
    mask = read_image(images / "masks" / "x1.png").array > 0
    np.testing.assert_array_equal(back, mask)
    out = write_like(back, data.reference_image("x1"), tmp_path / "x1_mask.png")
    np.testing.assert_array_equal(read_image(out).array > 0, mask)


def test_images_of_other_splits_are_not_read(images: Path) -> None:
    (images / "images" / "x0.png").write_bytes(b"not a png")  # a train image
    data = open_dataset(images, size=32, only_splits=("val", "test"))
    assert data.case_ids == ["x2", "x3"]
    (images / "labels.csv").unlink()  # every image is then train
    with pytest.raises(AnodiffError, match=r"no case in the val or test split "
                                           r"\(labels\.csv: id,label,split\)"):
        open_dataset(images, size=32, only_splits=("val", "test"))


def test_images_without_label_or_mask(images: Path) -> None:
    (images / "labels.csv").write_text(
        "id,label,split\nx0,,train\nx1,,train\nx2,1,val\nx3,,test\nx4,,train\n"
    )
    with pytest.raises(AnodiffError, match=r"x4\.npy: no label \(not in labels\.csv and no mask"):
        open_dataset(images)


def test_images_csv_and_file_problems(images: Path) -> None:
    csv = images / "labels.csv"
    csv.write_text(
        "id,label,split\nx0,,train\nx1,,train\nx2,1,val\nx3,,test\nx4,0,train\nx7,1,test\n"
    )
    with pytest.raises(AnodiffError, match=r"labels\.csv: ids without a file: \['x7'\]"):
        open_dataset(images)
    csv.write_text("id,label,split\nx0,,train\nx1,,train\nx2,1,val\nx3,,holdout\nx4,0,train\n")
    with pytest.raises(AnodiffError, match=r"labels\.csv:5: unknown split 'holdout' for 'x3'"):
        open_dataset(images)
    csv.write_text("id,label,split\nx0,2,train\nx1,,train\nx2,1,val\nx3,,test\nx4,0,train\n")
    with pytest.raises(AnodiffError, match=r"labels\.csv:2: label '2' for 'x0' is not 0, 1"):
        open_dataset(images)


def test_images_mask_shape_and_channel_mismatch(images: Path) -> None:
    PILImage.fromarray(np.zeros((20, 31), np.uint8)).save(images / "masks" / "x3.png")
    with pytest.raises(AnodiffError, match=r"x3\.png: mask of shape \(20, 31\) does not fit"):
        open_dataset(images)
    PILImage.fromarray(np.zeros((20, 30), np.uint8)).save(images / "masks" / "x3.png")
    PILImage.fromarray(np.full((20, 30, 3), 90, np.uint8)).save(images / "images" / "x2.png")
    with pytest.raises(AnodiffError, match=r"x2\.png: 3 channel\(s\), other images have 1"):
        open_dataset(images)


def test_voxel_volume_on_the_model_grid(volumes: Path) -> None:
    """1.2 x 1.0 mm in plane, 2 mm slices: 2.4 mm^3 per voxel as is, a quarter of it when
    the slices are resized to twice their size (lesion volumes in ml need this)."""
    padded = open_dataset(volumes, size=16, fit="pad")
    assert padded.voxel_ml("case1") == pytest.approx(1.2 * 1.0 * 2.0 / 1000)
    doubled = open_dataset(volumes, size=28, fit="resize")
    assert doubled.voxel_ml("case1") == pytest.approx(1.2 * 1.0 * 2.0 / 1000 / 4)
    # the in-plane pixel size (HD95 in mm needs it), halved by the resize
    assert sorted(padded.pixel_mm("case1")) == pytest.approx([1.0, 1.2])
    assert sorted(doubled.pixel_mm("case1")) == pytest.approx([0.5, 0.6])
