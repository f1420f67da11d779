"""Tests for anodiff.data.layouts: the folder layouts users bring, read as the same cases.

One set of volumes is written as anodiff's case folders, as nnU-Net raw data, as BIDS and
as a flat folder; every layout must give the same slices, labels and splits (where the
layout has them) as the case folders, and sequences must be matched by name.
"""

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from anodiff.data import discover, open_dataset, sequence_name
from anodiff.data.datasets import find_inputs
from anodiff.data.layouts import find_layout
from anodiff.errors import AnodiffError
from anodiff.workflows.inspect import inspect_lines

SHAPE = (12, 14, 10)
AFFINE = np.diag([-1.2, -1.0, 2.0, 1.0])
CASES = {"c0": False, "c1": True, "c2": False, "c3": True}  # case: has a lesion
SPLIT = {"c0": "train", "c1": "train", "c2": "train", "c3": "test"}


def brain() -> np.ndarray:
    g = np.indices(SHAPE).astype(float)
    return (g[0] - 6) ** 2 / 25 + (g[1] - 7) ** 2 / 30 + (g[2] - 5) ** 2 / 16 < 1


def volumes(case: str) -> dict[str, nib.Nifti1Image]:
    """The case's FLAIR, T1 and segmentation (lesioned cases have a bright FLAIR blob)."""
    rng = np.random.default_rng(int(case[1:]))
    seg = np.zeros(SHAPE, np.uint8)
    if CASES[case]:
        seg[5:7, 6:8, 4:6] = 1
    out = {}
    for k, seq in enumerate(("flair", "t1")):
        volume = np.where(brain(), rng.uniform(50 + 20 * k, 100 + 20 * k, SHAPE), 0.0)
        volume[seg > 0] = 250.0 if seq == "flair" else volume[seg > 0]
        out[seq] = nib.Nifti1Image(volume.astype(np.float32), AFFINE)
    out["seg"] = nib.Nifti1Image(seg, AFFINE)
    return out


def write_cases(root: Path) -> Path:
    for case in CASES:
        (root / case).mkdir(parents=True)
        for name, image in volumes(case).items():
            nib.save(image, root / case / f"{case}_{name}.nii.gz")
    (root / "splits.csv").write_text("case,split\n" + "".join(f"{c},{s}\n"
                                                            for c, s in SPLIT.items()))
    return root


def write_nnunet(root: Path) -> Path:
    """nnU-Net v2 raw data: FLAIR is channel 0001 and T1 channel 0000, to prove the channel
    names, not their order, decide."""
    for folder in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
        (root / folder).mkdir(parents=True)
    for case in CASES:
        part = "Ts" if SPLIT[case] == "test" else "Tr"
        images = volumes(case)
        nib.save(images["t1"], root / f"images{part}" / f"{case}_0000.nii.gz")
        nib.save(images["flair"], root / f"images{part}" / f"{case}_0001.nii.gz")
        nib.save(images["seg"], root / f"labels{part}" / f"{case}.nii.gz")
    (root / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "T1", "1": "FLAIR"}, "labels": {"background": 0, "lesion": 1},
        "numTraining": 3, "file_ending": ".nii.gz"}))
    return root


def write_bids(root: Path, *, sessions: bool = False) -> Path:
    """BIDS: sub-<case>/[ses-1/]anat/ with T1w and FLAIR, lesion masks in derivatives/."""
    (root / "dataset_description.json").parent.mkdir(parents=True)
    (root / "dataset_description.json").write_text('{"Name": "x", "BIDSVersion": "1.8.0"}')
    for case in CASES:
        subject = f"sub-{case}"
        ses = "ses-1" if sessions else ""
        anat = root / subject / ses / "anat"
        anat.mkdir(parents=True)
        prefix = f"{subject}_{ses}_" if ses else f"{subject}_"
        images = volumes(case)
        nib.save(images["t1"], anat / f"{prefix}T1w.nii.gz")
        nib.save(images["flair"], anat / f"{prefix}FLAIR.nii.gz")
        (anat / f"{prefix}T1w.json").write_text("{}")
        masks = root / "derivatives" / "lesions" / subject / ses / "anat"
        masks.mkdir(parents=True)
        nib.save(images["seg"], masks / f"{prefix}label-lesion_mask.nii.gz")
    return root


def write_files(root: Path) -> Path:
    """A flat folder: sub01_FLAIR.nii.gz, sub01_T1w.nii.gz, sub01_seg.nii.gz, ..."""
    root.mkdir(parents=True)
    for case in CASES:
        images = volumes(case)
        nib.save(images["flair"], root / f"{case}_FLAIR.nii.gz")
        nib.save(images["t1"], root / f"{case}_T1w.nii.gz")
        nib.save(images["seg"], root / f"{case}_seg.nii.gz")
    (root / "notes.txt").write_text("not an image")
    return root


def test_sequence_names() -> None:
    assert [sequence_name(n) for n in ("T1w", "T1", "t1", "T2w", "FLAIR", "T2-FLAIR",
                                       "t1ce", "T1Gd", "PDw", "custom")] == \
        ["t1", "t1", "t1", "t2", "flair", "flair", "t1ce", "t1ce", "pd", "custom"]
    assert sequence_name("T1map", {"t1map": "t1"}) == "t1"  # a user's name, any case


@pytest.mark.parametrize("writer,layout", [(write_nnunet, "nnunet"), (write_bids, "bids"),
                                           (write_files, "files")])
def test_every_layout_gives_the_same_slices(tmp_path: Path, writer, layout: str) -> None:
    reference = open_dataset(write_cases(tmp_path / "cases"), size=16)
    root = writer(tmp_path / layout)
    assert find_layout(root) == layout
    data = open_dataset(root, size=16)
    assert data.sequences == ("flair", "t1")
    names = {"bids": lambda c: f"sub-{c}"}.get(layout, lambda c: c)
    for case in CASES:
        ours, theirs = data.select_cases([names(case)]), reference.select_cases([case])
        np.testing.assert_array_equal(ours.images, theirs.images)
        np.testing.assert_array_equal(ours.masks, theirs.masks)  # labelsTr, derivatives, _seg
        np.testing.assert_array_equal(ours.labels, theirs.labels)
    if layout == "nnunet":  # imagesTs is the test split without a splits.csv
        assert sorted(set(data.split("test").cases)) == ["c3"]


def test_bids_sessions_are_cases(tmp_path: Path) -> None:
    found = discover(write_bids(tmp_path / "bids", sessions=True))
    assert sorted(found.cases) == [f"sub-{c}_ses-1" for c in CASES]
    assert all(sorted(files) == ["flair", "seg", "t1"] for files in found.cases.values())


def test_a_subset_of_sequences_is_picked_by_name(tmp_path: Path) -> None:
    root = write_nnunet(tmp_path / "nn")
    flair = open_dataset(root, size=16, sequences=["FLAIR"])
    both = open_dataset(root, size=16)
    assert flair.sequences == ("flair",)
    np.testing.assert_array_equal(flair.images[:, 0], both.images[:, 0])


def test_a_missing_sequence_names_the_pattern_looked_for(tmp_path: Path) -> None:
    root = write_bids(tmp_path / "bids")
    with pytest.raises(AnodiffError, match=r"lack a sequence of \['t2'\].*t2 \(sub-\*/.*"
                                           r"anat/\*_T2w\.nii\.gz"):
        open_dataset(root, size=16, sequences=["T2w"])
    root = write_cases(tmp_path / "cases")
    (root / "c2" / "c2_t1.nii.gz").unlink()
    with pytest.raises(AnodiffError, match=r"1 of 4 cases .*c2 lacks \['t1 \(<case>/<case>"
                                           r"_t1\.\*\)'\]"):
        open_dataset(root, size=16)


def test_an_unnamed_image_serves_a_one_sequence_model_only(tmp_path: Path) -> None:
    folder = tmp_path / "scans"
    folder.mkdir()
    nib.save(volumes("c1")["flair"], folder / "patient7.nii.gz")
    nib.save(volumes("c2")["t1"], folder / "patient8_T1w.nii.gz")
    cases = {c.name: c for c in find_inputs(folder, ["flair"])}
    assert cases["patient7"].files == {"flair": [folder / "patient7.nii.gz"]}
    assert not cases["patient7"].missing
    assert cases["patient8"].missing  # a T1 never stands for FLAIR
    assert "flair" in cases["patient8"].missing[0]
    assert find_inputs(folder, ["flair", "t1"])[0].missing  # nor an unnamed one for two


def test_nnunet_images_folder_takes_channel_names_from_the_parent(tmp_path: Path) -> None:
    root = write_nnunet(tmp_path / "nn")
    cases = find_inputs(root / "imagesTs", ["flair"])
    assert [c.name for c in cases] == ["c3"]
    assert cases[0].files == {"flair": [root / "imagesTs" / "c3_0001.nii.gz"]}
    (root / "dataset.json").unlink()  # without it, channels are unnamed indices
    assert find_inputs(root / "imagesTs", ["flair"])[0].missing  # two channels: ambiguous


def test_sequence_map_renames(tmp_path: Path) -> None:
    root = write_cases(tmp_path / "cases")
    for case in CASES:
        (root / case / f"{case}_t1.nii.gz").rename(root / case / f"{case}_MPR.nii.gz")
    data = open_dataset(root, size=16, sequences=["t1"], sequence_map={"MPR": "t1"})
    assert data.sequences == ("t1",)


def test_layout_errors_say_what_was_expected(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(AnodiffError, match="found no images, case folders.*nnU-Net.*BIDS"):
        find_layout(empty)
    with pytest.raises(AnodiffError, match="unknown layout 'brats'"):
        discover(empty, "brats")
    root = write_cases(tmp_path / "cases")
    with pytest.raises(AnodiffError, match="no image found as the bids layout"):
        discover(root, "bids")
    nn = write_nnunet(tmp_path / "nn")
    shutil.copy(nn / "imagesTr" / "c0_0000.nii.gz", nn / "imagesTs" / "c0_0000.nii.gz")
    with pytest.raises(AnodiffError, match="case 'c0' is in both imagesTr and imagesTs"):
        discover(nn)
    (nn / "dataset.json").write_text("{not json")
    with pytest.raises(AnodiffError, match="unreadable nnU-Net dataset.json"):
        discover(nn)


def test_inspect_reports_cases_missing_and_passed_over(tmp_path: Path) -> None:
    root = write_files(tmp_path / "flat")
    (root / "c2_T1w.nii.gz").unlink()
    lines = inspect_lines(root, sequences=["flair", "t1"])
    assert lines[0].startswith(f"{root}: files layout, 4 case(s); sequences found: flair, t1")
    assert "reading the sequences flair, t1" in lines[1]
    (c2,) = [line for line in lines if line.startswith("  c2 ")]
    assert "flair: c2_FLAIR.nii.gz" in c2 and "MISSING t1" in c2
    assert "3 of 4 case(s) have every sequence" in lines
    assert any(line.startswith("passed over") and "notes.txt" in line for line in lines)


def test_a_folder_of_datasets_says_to_pick_one(tmp_path: Path) -> None:
    write_cases(tmp_path / "all" / "tumour")
    (tmp_path / "all" / "overview.png").write_bytes(b"")  # a picture beside the tracks
    with pytest.raises(AnodiffError, match=r"holds datasets \(tumour\), not cases; point at "
                                           "one of them"):
        open_dataset(tmp_path / "all")
