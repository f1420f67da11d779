"""The embedded benchmark (``anodiff data synth``): determinism, exact masks, layout, contrasts.

Everything runs at ``size`` 32 (32 x 32 x 24 voxels of 6.25 mm) with 4 cases per track.
"""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage as ndi
from typer.testing import CliRunner

from anodiff.cli import app
from anodiff.data.synth import SynthConfig, build, make_case, roster, split_plan
from anodiff.data.synth.acquisition import SHIFTED, STANDARD, draw_scanner
from anodiff.data.synth.anatomy import Grid, healthy_anatomy
from anodiff.data.synth.case import case_streams, render
from anodiff.data.synth.stats import case_stats
from anodiff.errors import AnodiffError

SIZE = 32
SEQUENCES = ("t1", "t2", "flair")
TRACKS = ("tumour", "stroke", "wml", "lowcontrast", "shift")  # lesions with a tissue of their own
MASS_EFFECT = ("tumour", "shift")


def _hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "bench"
    build(out, SynthConfig(size=SIZE, cases=4, tracks=("wml", "tumour")), workers=1,
          progress=False)
    return out


def test_same_seed_gives_identical_bytes_and_another_seed_differs(
    built: Path, tmp_path: Path
) -> None:
    reference = _hashes(built)
    parallel = tmp_path / "parallel"
    build(parallel, SynthConfig(size=SIZE, cases=4, tracks=("wml", "tumour")), workers=2,
          progress=False)
    assert _hashes(parallel) == reference  # same seed, and independent of the worker count

    alone = tmp_path / "alone"
    build(alone, SynthConfig(size=SIZE, cases=4, tracks=("wml",)), workers=1, progress=False)
    wml = {k: v for k, v in reference.items() if k.startswith("wml/")}
    assert {k: v for k, v in _hashes(alone).items() if k.startswith("wml/")} == wml

    other = tmp_path / "other"
    build(other, SynthConfig(size=SIZE, seed=1, cases=4, tracks=("wml", "tumour")), workers=1,
          progress=False)
    changed = _hashes(other)
    volumes = [k for k in reference if k.endswith(("_t1.nii.gz", "_flair.nii.gz"))]
    assert volumes and all(changed[k] != reference[k] for k in volumes)


def test_layout_splits_and_masks(built: Path) -> None:
    manifest = json.loads((built / "manifest.json").read_text())
    assert manifest["seed"] == 0 and manifest["size"] == SIZE
    assert (built / "README.md").is_file() and (built / "overview.png").is_file()
    for track in ("wml", "tumour"):
        folder = built / track
        with (folder / "splits.csv").open() as f:
            rows = list(csv.DictReader(f))
        names = [r["case"] for r in rows]
        assert sorted(names) == sorted(p.name for p in folder.iterdir() if p.is_dir())
        assert len(set(names)) == len(names)
        assert {r["split"] for r in rows} <= {"train", "val", "test"}
        stats = json.loads((folder / "stats.json").read_text())
        for row in stats["cases"]:
            case = folder / row["case"]
            seg = nib.load(case / f"{row['case']}_seg.nii.gz")
            t1 = nib.load(case / f"{row['case']}_t1.nii.gz")
            assert seg.get_data_dtype() == np.uint8 and seg.shape == (SIZE, SIZE, 24)
            assert np.allclose(np.diag(t1.affine)[:3], 200.0 / SIZE)
            assert np.asarray(seg.dataobj).any() == row["lesion"]
        assert {r["split"] for r in stats["cases"]} == {"train", "val", "test"}


def test_files_hold_what_the_api_generates(built: Path) -> None:
    index, _, lesion = roster(SynthConfig(size=SIZE, cases=4), "tumour")[0]
    case = make_case("tumour", index, size=SIZE, lesion=lesion)
    folder = built / "tumour" / case.name
    for seq in SEQUENCES:
        stored = nib.load(folder / f"{case.name}_{seq}.nii.gz").get_fdata()
        assert np.abs(stored - case.images[seq]).max() <= 0.0006
    seg = np.asarray(nib.load(folder / f"{case.name}_seg.nii.gz").dataobj)
    assert np.array_equal(seg, case.seg)


def test_split_plan_defaults_and_minimum() -> None:
    assert split_plan(100) == {"train": {"healthy": 40, "lesion": 20},
                               "val": {"healthy": 4, "lesion": 6},
                               "test": {"healthy": 8, "lesion": 22}}
    small = split_plan(4)
    assert all(c["lesion"] >= 1 for c in small.values()) and small["train"]["healthy"] >= 1
    assert sum(c["healthy"] + c["lesion"] for c in small.values()) == 4
    cases = roster(SynthConfig(cases=100), "stroke")
    assert [i for i, _, _ in cases] == list(range(100))
    assert sum(1 for _, split, lesion in cases if split == "test" and lesion) == 22


@pytest.mark.parametrize("track", TRACKS)
def test_mask_covers_exactly_the_voxels_the_lesion_changed(track: str) -> None:
    rim = np.ones((3, 3, 1), bool)
    for index in range(2):
        case = make_case(track, index, size=SIZE)
        mask = case.seg > 0
        assert mask.any()
        change = np.max([np.abs(case.images[s] - case.twin[s]) for s in SEQUENCES], axis=0)
        # Partial-volume voxels on the mask's in-plane one-voxel rim may change; nothing
        # farther out, so slices without mask voxels are untouched.
        assert not (change[~ndi.binary_dilation(mask, rim)] > 0).any()
        assert not change[:, :, ~mask.any(axis=(0, 1))].any()
        # Every mask voxel visibly changed in at least one sequence.
        assert (change[mask] > 0.01).all()
        healthy = make_case(track, index, size=SIZE, lesion=False)
        assert not healthy.seg.any()
        if track not in MASS_EFFECT:  # the twin is the healthy case itself: same anatomy, noise
            for seq in SEQUENCES:
                assert np.array_equal(healthy.images[seq], case.twin[seq])


def test_structural_changes_show_only_normal_tissue_and_are_masked_where_tissue_changed(
) -> None:
    for index in range(6):
        case = make_case("structural", index, size=SIZE)
        healthy = make_case("structural", index, size=SIZE, lesion=False)
        mask = case.seg > 0
        assert mask.sum() >= 3 and not (mask & ~case.foreground).any()
        for seq in SEQUENCES:  # the twin is the healthy case before the change
            assert np.array_equal(healthy.images[seq], case.twin[seq])
        change = np.max([np.abs(case.images[s] - case.twin[s]) for s in SEQUENCES], axis=0)
        assert (change[mask] > 0.01).all()
        brain = healthy.foreground
        for seq in SEQUENCES:  # no tissue of its own: inside the healthy intensity range
            low, high = np.percentile(healthy.images[seq][brain], [1, 99])
            assert low < np.median(case.images[seq][mask]) < high


def test_structural_kinds_do_what_they_say() -> None:
    from anodiff.data.synth import lesions

    grid = Grid(64)
    for index in range(2):
        anatomy_rng, lesion_rng, _ = case_streams(0, "structural", index)
        before = healthy_anatomy(grid, anatomy_rng)
        wider = lesions._enlarged_ventricle(before, lesion_rng)
        left = before.template_mm()[0] < 0
        growth = [(wider.csf[side] > 0.5).sum() / (before.csf[side] > 0.5).sum()
                  for side in (left, ~left)]
        assert max(growth) > 1.2 and min(growth) == 1.0  # one ventricle, not both
        thinner = lesions._focal_atrophy(before, lesion_rng)
        assert np.array_equal(thinner.foreground, before.foreground)
        assert (thinner.gm <= before.gm).all() and (before.gm - thinner.gm).sum() > 5
        assert np.allclose(thinner.brain, before.brain)  # lost tissue became CSF
        pushed = lesions._space_occupation(before, lesion_rng)
        assert (np.abs(pushed.wm - before.wm) > 0.25).sum() > 20


def test_shifted_scanners_leave_the_training_ranges() -> None:
    shape = (8, 8, 6)
    for index in range(4):
        rng = np.random.default_rng(index)
        standard = draw_scanner(shape, rng, STANDARD)
        shifted = draw_scanner(shape, np.random.default_rng(index), SHIFTED)
        for seq in SEQUENCES:
            assert 0.85 <= standard.gamma[seq] <= 1.18 and standard.blur[seq] is None
            assert not 0.8 < shifted.gamma[seq] < 1.25
            assert shifted.noise[seq].std() > 1.1 * standard.noise[seq].std()
            assert min(shifted.blur[seq]) >= 0.5
    case = make_case("shift", 0, size=SIZE)
    moved = make_case("shift", 0, size=SIZE, shifted=True)
    assert np.array_equal(case.seg, moved.seg)  # same anatomy and lesion, another scanner
    assert np.abs(case.images["flair"] - moved.images["flair"])[case.foreground].mean() > 0.03


def test_only_the_shift_tracks_test_split_is_shifted(tmp_path: Path) -> None:
    out = tmp_path / "bench"
    build(out, SynthConfig(size=SIZE, cases=6, tracks=("shift", "stroke")), workers=1,
          progress=False)
    for track in ("shift", "stroke"):
        rows = json.loads((out / track / "stats.json").read_text())["cases"]
        shifted = {r["split"] for r in rows if r["scanner"] == "shifted"}
        assert shifted == ({"test"} if track == "shift" else set())
        assert all(r["scanner"] == "standard" for r in rows if r["split"] != "test")


def test_tumour_mass_effect_is_local() -> None:
    for index in range(3):
        case = make_case("tumour", index, size=SIZE)
        healthy = make_case("tumour", index, size=SIZE, lesion=False)
        distance = ndi.distance_transform_edt(case.seg == 0) * 200.0 / SIZE
        shift = np.abs(healthy.images["t1"] - case.twin["t1"])
        both = case.foreground & healthy.foreground
        near = shift[both & (distance > 0) & (distance <= 12)].mean()
        far = shift[both & (distance > 40)].mean()
        assert near > 0.015 and far < 0.015 and far < near / 3


def test_healthy_anatomy_varies_between_cases() -> None:
    a = make_case("wml", 0, size=SIZE, lesion=False)
    b = make_case("wml", 1, size=SIZE, lesion=False)
    dice = 2 * (a.foreground & b.foreground).sum() / (a.foreground.sum() + b.foreground.sum())
    assert dice < 0.95  # different shape and slice position, not just different noise
    union = a.foreground | b.foreground
    assert np.abs(a.images["t1"] - b.images["t1"])[union].mean() > 0.1


def test_contrasts_follow_tissue_physics() -> None:
    grid = Grid(SIZE)
    for index in range(3):
        anatomy_rng, _, scanner_rng = case_streams(0, "stroke", index)
        anatomy = healthy_anatomy(grid, anatomy_rng)
        images = render(anatomy, (), draw_scanner(grid.shape, scanner_rng))
        inside = anatomy.foreground
        csf, gm, wm = ((p > 0.8) & inside for p in (anatomy.csf, anatomy.gm, anatomy.wm))
        mean = {s: {"csf": images[s][csf].mean(), "gm": images[s][gm].mean(),
                    "wm": images[s][wm].mean()} for s in SEQUENCES}
        assert mean["t2"]["csf"] > mean["t2"]["gm"] > mean["t2"]["wm"]
        assert mean["flair"]["csf"] < mean["flair"]["wm"] < mean["flair"]["gm"]
        assert mean["t1"]["csf"] < mean["t1"]["gm"] < mean["t1"]["wm"]


def test_lowcontrast_lesions_hide_in_t1_but_show_in_flair() -> None:
    for index in range(4):
        row = case_stats(make_case("lowcontrast", index, size=SIZE))
        t1, flair = abs(row["twin"]["t1"]), row["twin"]["flair"]
        assert t1 <= 0.12 and flair > 0.25 and t1 < flair / 3
        assert 0.1 < row["percentile"]["t1"] < 0.9  # inside the healthy T1 range


def test_cli_default_tracks_are_all_tracks() -> None:
    from anodiff.cli import SYNTH_TRACKS
    from anodiff.data.synth import TRACK_NAMES

    assert tuple(SYNTH_TRACKS.split(",")) == TRACK_NAMES


def test_cli_builds_and_refuses_a_non_empty_folder(tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "bench"
    args = ["data", "synth", "--out", str(out), "--size", str(SIZE), "--cases", "4",
            "--tracks", "stroke", "--workers", "1"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert (out / "stroke" / "splits.csv").is_file() and "wrote" in result.output

    again = runner.invoke(app, args)
    assert again.exit_code != 0 and isinstance(again.exception, AnodiffError)
    assert "not empty" in str(again.exception)

    replaced = runner.invoke(app, [*args[:-3], "wml", "--workers", "1", "--overwrite"])
    assert replaced.exit_code == 0, replaced.output
    assert (out / "wml").is_dir() and not (out / "stroke").exists()

    bad = runner.invoke(app, ["data", "synth", "--out", str(tmp_path / "x"), "--size", "8"])
    assert isinstance(bad.exception, AnodiffError) and "--size" in str(bad.exception)
