"""Tests for anodiff.workflows.detect: maps in the input's geometry, errors per input, 2-D."""

import csv
import hashlib
import shutil
from dataclasses import replace
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
import yaml
from PIL import Image as PILImage
from scipy import ndimage

import anodiff
from anodiff.config import build
from anodiff.data.datasets import find_inputs, load_input_case
from anodiff.data.slicing import volume_to_slices
from anodiff.errors import AnodiffError
from anodiff.evaluation.runner import predict, with_map_steps
from anodiff.methods.results import AnomalyResult
from anodiff.methods.threshold import ThresholdDetector
from anodiff.scoring.postprocess import PostProcess
from anodiff.workflows.benchmark import BenchmarkConfig, run_benchmark_config
from anodiff.workflows.detect import detect_inputs
from anodiff.workflows.evaluate import evaluate_run
from anodiff.workflows.export import export_run
from anodiff.workflows.run import load_run, train_run

SHAPE = (24, 24, 10)
SEQUENCES = ("flair", "t1")
LESION = (slice(10, 12), slice(11, 14), slice(4, 6))  # 12 voxels, < 1 % of the brain


def oblique_affine() -> np.ndarray:
    """LPS-like, anisotropic, rotated 12 degrees about the axial axis."""
    a = np.deg2rad(12)
    rotation = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([-1.1, -0.9, 2.0])
    affine[:3, 3] = [12.0, 15.0, -9.0]
    return affine


def brain() -> np.ndarray:
    g = np.indices(SHAPE).astype(float)
    return (g[0] - 11.5) ** 2 / 110 + (g[1] - 11.5) ** 2 / 110 + (g[2] - 4.5) ** 2 / 12 < 1


def write_case(root: Path, case: str, seed: int, *, lesion: bool) -> None:
    folder = root / case
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    seg = np.zeros(SHAPE, np.uint8)
    if lesion:
        seg[LESION] = 1
    for k, seq in enumerate(SEQUENCES):
        volume = np.where(brain(), rng.normal(70 + 20 * k, 5, SHAPE), 0.0)
        volume[seg > 0] = 200.0
        nib.save(nib.Nifti1Image(volume.astype(np.float32), oblique_affine()),
                 folder / f"{case}_{seq}.nii.gz")
    nib.save(nib.Nifti1Image(seg, oblique_affine()), folder / f"{case}_seg.nii.gz")


@pytest.fixture(scope="module")
def volume_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A threshold run trained on four healthy cases, and a lesioned case to detect on."""
    root = tmp_path_factory.mktemp("volumes")
    for i in range(4):
        write_case(root / "DATA", f"case{i}", i, lesion=False)
    write_case(root / "inputs", "sick", 9, lesion=True)
    train_run("threshold", root / "DATA", root / "run", preset="quick",
              values={"data": {"size": 16}})
    return root / "run", root / "inputs" / "sick"


def read_scores(out: Path) -> list[dict[str, str]]:
    with open(out / "scores.csv", newline="") as f:
        return list(csv.DictReader(f))


def digests(folder: Path) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_case_folder_maps_in_input_geometry(volume_run: tuple[Path, Path],
                                            tmp_path: Path) -> None:
    run, case = volume_run
    report = detect_inputs(run, [case], tmp_path / "out", progress=False)
    assert not report.failures
    reference = nib.load(case / "sick_flair.nii.gz")
    amap = nib.load(tmp_path / "out" / "sick_anomaly_map.nii.gz")
    mask = nib.load(tmp_path / "out" / "sick_mask.nii.gz")
    for image in (amap, mask):
        assert image.shape == SHAPE
        np.testing.assert_allclose(image.affine, reference.affine, atol=1e-5)
    values = amap.get_fdata()
    lesion = nib.load(case / "sick_seg.nii.gz").get_fdata() > 0
    assert values[lesion].mean() > values[brain() & ~lesion].mean()
    empty = ~brain().any(axis=(0, 1))
    assert empty.sum() == 4 and np.all(values[:, :, empty] == 0)  # no foreground: zero map
    assert mask.get_fdata()[lesion].mean() > 0.5
    assert not (tmp_path / "out" / "sick_pseudo_healthy_flair.nii.gz").exists()  # none here

    (row,) = read_scores(tmp_path / "out")
    assert (row["input"], row["name"], row["status"], row["message"]) == (
        str(case), "sick", "ok", "")
    assert int(row["n_slices"]) == int(brain().any(axis=(0, 1)).sum())  # every brain slice
    assert 2 <= int(row["anomalous_slices"]) <= int(row["n_slices"])
    assert float(row["score"]) == report.rows[0].score and float(row["nfe_per_slice"]) == 0
    assert float(row["seconds"]) >= 0


def test_pseudo_healthy_per_sequence(volume_run: tuple[Path, Path], tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A method with pseudo-healthy images (here: the input itself) gets one file each."""
    run, case = volume_run
    localize = ThresholdDetector.localize

    def with_pseudo_healthy(self: ThresholdDetector, images: torch.Tensor) -> AnomalyResult:
        return replace(localize(self, images), pseudo_healthy=images.clone())

    monkeypatch.setattr(ThresholdDetector, "localize", with_pseudo_healthy)
    detect_inputs(run, [case], tmp_path, progress=False)
    for seq in SEQUENCES:
        healthy = nib.load(tmp_path / f"sick_pseudo_healthy_{seq}.nii.gz").get_fdata()
        assert healthy.shape == SHAPE and healthy.min() >= 0 and healthy.max() <= 1
        assert healthy[brain()].mean() > 0.2
        assert np.all(healthy[:, :, ~brain().any(axis=(0, 1))] == 0)


def test_bad_inputs_are_recorded_and_the_rest_runs(volume_run: tuple[Path, Path],
                                                   tmp_path: Path) -> None:
    run, case = volume_run
    missing = tmp_path / "half"
    missing.mkdir()
    (missing / "half_flair.nii.gz").write_bytes((case / "sick_flair.nii.gz").read_bytes())
    text = tmp_path / "notes.nii.gz"
    text.write_text("not an image")
    inputs = [missing, case, text, tmp_path / "nowhere"]
    report = detect_inputs(run, inputs, tmp_path / "out", progress=False)

    assert [row.status for row in report.rows] == ["error", "ok", "error", "error"]
    assert [row.input for row in report.failures] == [str(missing), str(text),
                                                       str(tmp_path / "nowhere")]
    assert "missing sequence" in report.rows[0].message and "t1" in report.rows[0].message
    assert str(text) in report.rows[2].message
    assert (tmp_path / "out" / "sick_anomaly_map.nii.gz").is_file()
    rows = read_scores(tmp_path / "out")
    assert [r["status"] for r in rows] == ["error", "ok", "error", "error"]
    assert rows[0]["message"] == report.rows[0].message and rows[0]["score"] == ""


def test_inputs_are_never_written_to(volume_run: tuple[Path, Path], tmp_path: Path) -> None:
    run, case = volume_run
    before = digests(case)
    detect_inputs(run, [case], tmp_path / "out", progress=False)
    assert digests(case) == before
    with pytest.raises(AnodiffError, match="inside the input"):
        detect_inputs(run, [case], case / "maps", progress=False)  # would join the case
    assert digests(case) == before and not (case / "maps").exists()


def test_same_name_twice_is_refused(volume_run: tuple[Path, Path], tmp_path: Path) -> None:
    run, case = volume_run
    twin = tmp_path / "elsewhere" / "sick"
    twin.mkdir(parents=True)
    for p in case.iterdir():
        (twin / p.name).write_bytes(p.read_bytes())
    report = detect_inputs(run, [case, twin], tmp_path / "out", progress=False)
    assert [row.status for row in report.rows] == ["ok", "error"]
    assert "rename" in report.rows[1].message


def test_single_volume_for_a_one_sequence_model(volume_run: tuple[Path, Path],
                                                tmp_path: Path) -> None:
    run, case = volume_run
    data = Path(run).parent / "DATA"
    one = tmp_path / "run1"
    train_run("threshold", data, one, preset="quick",
              values={"data": {"size": 16, "sequences": ["flair"]}})
    volume = case / "sick_flair.nii.gz"
    report = detect_inputs(one, [volume, case], tmp_path / "out", progress=False)
    assert [row.status for row in report.rows] == ["ok", "ok"]
    assert [row.name for row in report.rows] == ["sick_flair", "sick"]
    assert nib.load(tmp_path / "out" / "sick_flair_anomaly_map.nii.gz").shape == SHAPE
    # a two-sequence model cannot take one volume
    report = detect_inputs(run, [volume], tmp_path / "out2", progress=False)
    assert "case folder" in report.rows[0].message


def test_folders_of_cases_in_users_layouts(volume_run: tuple[Path, Path],
                                           tmp_path: Path) -> None:
    """A dataset root, an nnU-Net imagesTs folder and a BIDS root are read case by case, and
    each case gets the maps its case folder gets."""
    run, case = volume_run
    root = tmp_path / "nnunet"
    (root / "imagesTs").mkdir(parents=True)
    (root / "dataset.json").write_text('{"channel_names": {"0": "T1", "1": "FLAIR"}}')
    bids = tmp_path / "bids" / "sub-07" / "anat"
    bids.mkdir(parents=True)
    for channel, (sequence, suffix) in enumerate((("t1", "T1w"), ("flair", "FLAIR"))):
        image = case / f"sick_{sequence}.nii.gz"
        shutil.copy(image, root / "imagesTs" / f"sick_{channel:04d}.nii.gz")
        shutil.copy(image, bids / f"sub-07_{suffix}.nii.gz")
    detect_inputs(run, [case], tmp_path / "reference", progress=False)
    expected = nib.load(tmp_path / "reference" / "sick_anomaly_map.nii.gz").get_fdata()

    report = detect_inputs(run, [root / "imagesTs", tmp_path / "bids", case.parent],
                           tmp_path / "out", progress=False)
    assert [(row.name, row.status) for row in report.rows] == [
        ("sick", "ok"), ("sub-07", "ok"), ("sick", "error")]  # the third: the same name
    # a case of files is known by its first sequence's file (FLAIR, channel 0001 here)
    assert report.rows[0].input == str(root / "imagesTs" / "sick_0001.nii.gz")
    assert report.rows[1].input == str(bids)
    for name in ("sick", "sub-07"):
        np.testing.assert_array_equal(
            nib.load(tmp_path / "out" / f"{name}_anomaly_map.nii.gz").get_fdata(), expected)
    forced = detect_inputs(run, [root / "imagesTs"], tmp_path / "forced", layout="bids",
                           progress=False)
    assert "no image found as the bids layout" in forced.rows[0].message


def test_run_yaml_records_the_sequences_so_detect_needs_no_training_data(
        volume_run: tuple[Path, Path], tmp_path: Path) -> None:
    """Training writes the channels it used into run.yaml; the training folder may go."""
    run, case = volume_run
    moved = tmp_path / "run"
    shutil.copytree(run, moved)
    spec = yaml.safe_load((moved / "run.yaml").read_text())
    assert spec["data"]["sequences"] == sorted(SEQUENCES)
    spec["data_root"] = str(tmp_path / "gone")
    (moved / "run.yaml").write_text(yaml.safe_dump(spec))
    report = detect_inputs(moved, [case], tmp_path / "out", progress=False)
    assert report.rows[0].score == detect_inputs(run, [case], tmp_path / "out2",
                                                 progress=False).rows[0].score


def write_png(path: Path, array: np.ndarray) -> None:
    PILImage.fromarray(array.astype(np.uint8)).save(path)


def grey_image(seed: int, shape: tuple[int, int] = (20, 28), lesion: bool = False) -> np.ndarray:
    rng = np.random.default_rng(seed)
    g = np.indices(shape).astype(float)
    disc = (g[0] - shape[0] / 2) ** 2 + (g[1] - shape[1] / 2) ** 2 < (min(shape) / 2 - 1) ** 2
    image = np.where(disc, rng.normal(100, 8, shape), 0)
    if lesion:
        image[8:11, 12:15] = 250
    return np.clip(image, 0, 255)


def test_png_in_png_out(tmp_path: Path) -> None:
    data = tmp_path / "DATA"
    (data / "images").mkdir(parents=True)
    for i in range(4):
        write_png(data / "images" / f"img{i}.png", grey_image(i))
    (data / "labels.csv").write_text("id,label,split\n" + "".join(
        f"img{i},0,train\n" for i in range(4)))
    train_run("threshold", data, tmp_path / "run", preset="quick", values={"data": {"size": 16}})

    inputs = tmp_path / "inputs"
    inputs.mkdir()
    write_png(inputs / "scan.png", grey_image(7, lesion=True))
    write_png(inputs / "colour.png", np.repeat(grey_image(8)[..., None], 3, -1) * [1, 0.5, 0.2])
    nib.save(nib.Nifti1Image(np.ones((4, 4, 4, 2), np.float32), np.eye(4)),
             inputs / "fourd.nii.gz")
    write_png(inputs / "other.png", grey_image(9))
    (tmp_path / "out").mkdir()
    decoy = tmp_path / "out" / "other_mask.png"  # an input where an output would go
    decoy.write_bytes((inputs / "scan.png").read_bytes())
    before = digests(inputs) | digests(tmp_path / "out")
    report = detect_inputs(tmp_path / "run", [inputs / "scan.png", inputs / "colour.png",
                                              inputs / "fourd.nii.gz", inputs / "other.png",
                                              decoy],
                           tmp_path / "out", progress=False)
    assert [row.status for row in report.rows] == ["ok", "error", "error", "error", "ok"]
    assert "model takes (1, 16, 16)" in report.rows[1].message
    assert "4-D" in report.rows[2].message
    assert "would overwrite an input" in report.rows[3].message
    assert not (tmp_path / "out" / "other_anomaly_map.png").exists()  # nothing half-written
    after = digests(inputs) | digests(tmp_path / "out")
    assert {k: after[k] for k in before} == before
    with PILImage.open(tmp_path / "out" / "scan_anomaly_map.png") as amap:
        assert amap.size == (28, 20)
        values = np.asarray(amap, dtype=float)
    with PILImage.open(tmp_path / "out" / "scan_mask.png") as mask:
        assert mask.size == (28, 20)
    assert values[8:11, 12:15].mean() > values.mean()
    assert report.rows[0].n_slices == 1


def test_sequences_and_channels_by_name(volume_run: tuple[Path, Path], tmp_path: Path) -> None:
    """``channel: FLAIR`` and ``sequences: [T1w]`` name sequences as users write them."""
    run, _ = volume_run
    data = Path(run).parent / "DATA"
    train_run("threshold", data, tmp_path / "bright", preset="quick", values={
        "data": {"size": 16}, "method": {"mode": "bright", "channel": "FLAIR"}})
    spec = yaml.safe_load((tmp_path / "bright" / "run.yaml").read_text())
    assert spec["method_config"]["channel"] == SEQUENCES.index("flair")  # the index it used
    train_run("threshold", data, tmp_path / "t1", preset="quick",
              values={"data": {"size": 16, "sequences": ["T1w"]}})
    assert yaml.safe_load((tmp_path / "t1" / "run.yaml").read_text())["data"]["sequences"] == [
        "t1"]
    with pytest.raises(AnodiffError, match=r"channel 'dwi': the data has the sequences "
                                           r"\['flair', 't1'\]"):
        train_run("threshold", data, tmp_path / "dwi", preset="quick",
                  values={"data": {"size": 16}, "method": {"channel": "dwi"}})


def test_case_score_separates_cases_whatever_the_mask_rule(
        volume_run: tuple[Path, Path], tmp_path: Path) -> None:
    """With per-slice Otsu masks every case, healthy or not, has flagged slices; the case
    score (brain share above the healthy-calibrated threshold) still tells the lesioned case
    from a healthy one, and says which is above every healthy calibration case."""
    run, sick = volume_run
    data = Path(run).parent / "DATA"
    train_run("threshold", data, tmp_path / "otsu", preset="quick",
              values={"data": {"size": 16}, "method": {"mask": "otsu"}})
    first = detect_inputs(tmp_path / "otsu", [data / "case3", sick], tmp_path / "out",
                          progress=False)
    by_name = {row.name: row for row in first.rows}
    assert by_name["case3"].anomalous_slices == by_name["case3"].n_slices  # Otsu flags all
    healthy, lesioned = by_name["case3"], by_name["sick"]
    assert healthy.case_threshold == lesioned.case_threshold > 0
    assert healthy.case_score <= healthy.case_threshold  # a calibration case itself
    assert not healthy.case_anomalous and lesioned.case_anomalous
    assert lesioned.case_score > healthy.case_score + 0.5 * 12 / brain().sum()
    row = {r["name"]: r for r in read_scores(tmp_path / "out")}["sick"]
    assert row["case_anomalous"] == "True" and float(row["case_score"]) == lesioned.case_score


def test_localize_normalises_a_raw_volume_as_training_did(
        volume_run: tuple[Path, Path]) -> None:
    """``localize(raw, normalise=True)`` on a volume's raw axial slices gives the inputs,
    and so the maps, that detect gets from the file: per-sequence statistics over the whole
    volume, resized to the model size."""
    run, sick = volume_run
    det = anodiff.load(run)
    assert det.recipe is not None and det.recipe.sequences == SEQUENCES
    raw = np.stack([nib.load(sick / f"sick_{s}.nii.gz").get_fdata() for s in SEQUENCES])
    slices, layout = volume_to_slices(raw, oblique_affine())  # every slice, raw intensities
    case = find_inputs(sick, SEQUENCES)[0]
    data = load_input_case(case, SEQUENCES, size=16, fit="resize", normalisation="percentile")
    rows = [int(np.flatnonzero(layout.indices == i)[0]) for i in data.indices]
    assert np.allclose(det.normalised(slices).numpy()[rows], data.images, atol=1e-6)
    ours = det.localize(slices, normalise=True)
    assert torch.allclose(ours.anomaly_map[rows], det.localize(data.images).anomaly_map)
    with pytest.raises(AnodiffError, match=r"expected raw images .*\(N, 2, H, W\), got"):
        det.localize(slices[:, 0], normalise=True)
    with pytest.raises(AnodiffError, match=r"intensities must lie in \[0, 1\]"):
        det.localize(slices[:, :, 4:20, 4:20] * 0 + 100.0)  # raw values, normalise off
    arrays = ThresholdDetector(det.config).fit(torch.as_tensor(data.images))
    with pytest.raises(AnodiffError, match="normalise the images to .0, 1. yourself"):
        arrays.localize(slices, normalise=True)


def test_scores_csv_keeps_rows_across_reruns_and_separates_cases(
        volume_run: tuple[Path, Path], tmp_path: Path) -> None:
    """A rerun updates its inputs' rows and keeps the others; ``--skip-existing`` leaves
    done cases alone; the flagged share of brain separates a lesioned case from a healthy
    one."""
    run, sick = volume_run
    healthy = Path(run).parent / "DATA" / "case3"
    out = tmp_path / "out"
    first = detect_inputs(run, [healthy, sick], out, progress=False)
    by_name = {row.name: row for row in first.rows}
    lesion_share = 12 / brain().sum()  # LESION's voxels in the brain
    assert by_name["sick"].flagged_fraction > by_name["case3"].flagged_fraction + \
        0.5 * lesion_share
    assert by_name["case3"].flagged_fraction < 0.03  # near the calibrated 1 %
    assert by_name["sick"].flagged_ml > 0 and by_name["sick"].threshold is not None
    assert by_name["sick"].threshold_origin.startswith("healthy_fpr: 0.01")

    again = detect_inputs(run, [sick, tmp_path / "nowhere"], out, progress=False)
    rows = read_scores(out)
    assert [r["name"] for r in rows] == ["case3", "sick", "nowhere"]  # case3 kept
    assert float(rows[1]["seconds"]) == again.rows[0].seconds  # sick's row replaced
    skipped = detect_inputs(run, [healthy, sick], out, progress=False, skip_existing=True)
    assert skipped.rows == () and skipped.skipped == (str(healthy), str(sick))
    (out / "sick_anomaly_map.nii.gz").unlink()  # a map gone: that case runs again
    redone = detect_inputs(run, [healthy, sick], out, progress=False, skip_existing=True)
    assert [row.name for row in redone.rows] == ["sick"]
    (out / "scores.csv").write_text("case,value\nx,1\n")
    with pytest.raises(AnodiffError, match=r"scores.csv: missing column\(s\) \['input', "
                                           r"'status'\]"):
        detect_inputs(run, [sick], out, progress=False)


def test_a_2_5_d_run_detects_with_neighbours_and_writes_the_slice_s_own_outputs(
        volume_run: tuple[Path, Path], tmp_path: Path) -> None:
    """A run trained with ``data.context: 1`` records the sequences (not the context
    channels), gives every input slice its neighbours from the input volume, and writes the
    map and the pseudo-healthy image of each sequence once, on the input's grid;
    ``localize(raw, normalise=True)`` makes the same neighbours from a volume's slices."""
    data_root = volume_run[1].parent.parent / "DATA"
    run = tmp_path / "run25d"
    train_run("anoddpm", data_root, run, preset="quick",
              values={"data": {"size": 16, "context": 1},
                      "method": {"diffusion": {"train": {"steps": 4}}}})
    assert yaml.safe_load((run / "run.yaml").read_text())["data"]["sequences"] == \
        list(SEQUENCES)
    det = anodiff.load(run)
    assert det.input_shape == (6, 16, 16) and det.recipe is not None
    report = detect_inputs(run, [volume_run[1]], tmp_path / "out", progress=False)
    assert not report.failures
    written = sorted(p.name for p in (tmp_path / "out").glob("sick_pseudo_healthy_*"))
    assert written == [f"sick_pseudo_healthy_{seq}.nii.gz" for seq in SEQUENCES]
    assert nib.load(tmp_path / "out" / "sick_anomaly_map.nii.gz").shape == SHAPE
    case = find_inputs(volume_run[1], SEQUENCES)[0]
    data = load_input_case(case, SEQUENCES, size=16, context=1)
    assert data.images.shape[1] == 6 and data.centre_sequences == SEQUENCES
    raw = np.stack([nib.load(volume_run[1] / f"sick_{s}.nii.gz").get_fdata()
                    for s in SEQUENCES])
    slices, layout = volume_to_slices(raw, oblique_affine())
    rows = [int(np.flatnonzero(layout.indices == i)[0]) for i in data.indices]
    np.testing.assert_allclose(det.normalised(slices).numpy()[rows], data.images, atol=1e-6)


def test_every_case_gets_a_lesion_table_of_its_written_mask(volume_run: tuple[Path, Path],
                                                            tmp_path: Path) -> None:
    """``<name>_lesions.csv`` lists the connected components of the mask as written (on the
    input's grid), their volumes from the input's voxel size; scores.csv counts them."""
    run, case = volume_run
    detect_inputs(run, [case], tmp_path, progress=False)
    rows = list(csv.DictReader((tmp_path / "sick_lesions.csv").open()))
    (score,) = read_scores(tmp_path)
    mask = nib.load(tmp_path / "sick_mask.nii.gz")
    flagged = mask.get_fdata() > 0
    _, components = ndimage.label(flagged, np.ones((3, 3, 3)))
    assert len(rows) == int(score["lesions"]) == components >= 1
    voxel_ml = abs(np.linalg.det(mask.affine[:3, :3])) / 1000
    assert sum(float(r["volume_ml"]) for r in rows) == pytest.approx(flagged.sum() * voxel_ml)
    centre = np.array([np.mean([s.start, s.stop - 1]) for s in LESION])
    assert any(all(int(r[f"box_{a}_min"]) <= c <= int(r[f"box_{a}_max"])
                   for a, c in zip("ijk", centre, strict=True)) for r in rows)
    world = [float(rows[0][f"centroid_{a}_mm"]) for a in "ras"]
    index = [float(rows[0][f"centroid_{a}"]) for a in "ijk"]
    np.testing.assert_allclose(world, (mask.affine @ [*index, 1.0])[:3], atol=1e-6)


def test_mask_steps_clean_the_written_mask_and_map_steps_are_refused(
        volume_run: tuple[Path, Path], tmp_path: Path) -> None:
    """``postprocess`` cleans each case's mask before it is written, counted and tabled (here
    3-D lesions under ``min_lesion_ml``), leaves the map alone, and says so in scores.csv; a
    map step is refused before anything is written, since the run's threshold was calibrated
    on unfiltered maps."""
    run, case = volume_run
    detector, spec = load_run(run, "cpu")
    detector.threshold.fill_(float(detector.threshold) * 0.8)  # noise specks beside the lesion
    kept_ml = 0.01  # about 2 voxels of the 16 x 16 model grid; the lesion has about 5
    outputs = {}
    for name, post in (("plain", None), ("cleaned", PostProcess(min_lesion_ml=kept_ml)),
                       ("nothing", PostProcess(min_lesion_ml=10.0))):
        report = detect_inputs(run, [case], tmp_path / name, progress=False,
                               loaded=(detector, spec), postprocess=post)
        assert not report.failures
        outputs[name] = (nib.load(tmp_path / name / "sick_mask.nii.gz").get_fdata() > 0,
                         nib.load(tmp_path / name / "sick_anomaly_map.nii.gz").get_fdata(),
                         read_scores(tmp_path / name)[0])
    (plain, plain_map, plain_row), (cleaned, cleaned_map, row) = outputs["plain"], \
        outputs["cleaned"]
    lesion = nib.load(case / "sick_seg.nii.gz").get_fdata() > 0
    assert int(plain_row["lesions"]) > int(row["lesions"]) >= 1, "specks dropped, lesion kept"
    assert not (cleaned & ~plain).any() and cleaned[lesion].mean() > 0.5
    assert float(row["flagged_ml"]) < float(plain_row["flagged_ml"])
    assert int(row["lesions"]) == len(list(csv.DictReader(
        (tmp_path / "cleaned" / "sick_lesions.csv").open())))
    assert (row["postprocess"], plain_row["postprocess"]) == (f"min_lesion_ml={kept_ml}", "")
    np.testing.assert_array_equal(cleaned_map, plain_map)
    empty, _, none_row = outputs["nothing"]
    assert not empty.any() and (none_row["lesions"], none_row["anomalous_slices"],
                                float(none_row["flagged_ml"])) == ("0", "0", 0.0)

    with pytest.raises(AnodiffError, match=r"interslice_median=3.*mask steps only"):
        detect_inputs(run, [case], tmp_path / "median", progress=False,
                      postprocess=PostProcess(interslice_median=3))
    assert not (tmp_path / "median").exists()


def test_a_run_exported_with_map_steps_calibrates_detects_and_evaluates_with_them(
        volume_run: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """``export --postprocess interslice_median=3 --refit DATA`` calibrates the threshold on
    healthy maps filtered by the inter-slice median (checked against scipy's median over each
    case's slices and numpy's quantile), records the step in run.yaml, and ``detect`` filters
    each case's maps with it before the mask and the case score; ``evaluate`` takes it as its
    default and calibrates the same threshold. Without a refit, or as a detect option, a map
    step is refused."""
    run, case = volume_run
    data = tmp_path / "data"  # the training cases, one for validation, and the lesioned one
    shutil.copytree(run.parent / "DATA", data)
    shutil.copytree(case, data / case.name)
    (data / "splits.csv").write_text("case,split\ncase0,train\ncase1,val\ncase2,val\n"
                                     f"case3,test\n{case.name},test\n")
    post = PostProcess(interslice_median=3)
    with monkeypatch.context() as patch:  # no calibration on unfiltered maps first
        patch.setattr(anodiff.Detector, "calibrate", lambda *_: pytest.fail("unfiltered"))
        filtered = export_run(run, tmp_path / "filtered", refit_data=data, postprocess=post)
    detector, spec = load_run(filtered, "cpu")
    assert spec.postprocess == post
    assert yaml.safe_load((filtered / "run.yaml").read_text())["postprocess"] == {
        "interslice_median": 3}

    healthy = spec.data.open(data).for_regime("self", split="val")
    found = predict(anodiff.load(run / "model"), healthy, progress=False)
    cases = np.asarray(found.cases)
    maps = found.maps.copy()
    for name in dict.fromkeys(found.cases):
        maps[cases == name] = ndimage.median_filter(maps[cases == name], size=(3, 1, 1),
                                                    mode="nearest")
    pixels = maps[found.foreground]
    expected = np.quantile(pixels, 1 - detector.config.fpr, method="higher")
    assert float(detector.threshold) == pytest.approx(expected, rel=1e-6)
    assert float(detector.threshold) != pytest.approx(float(anodiff.load(run / "model")
                                                            .threshold), rel=1e-3)

    # the model keeps its map steps: the Python API filters one case's slices with them
    with caplog.at_level("INFO"):
        api = anodiff.load(filtered)
    assert api.map_steps == post and "filtered by interslice_median=3" in caplog.text
    first = np.flatnonzero(cases == cases[0])
    slices = torch.from_numpy(healthy.images[first])
    whole = api.localize(slices, one_case=True)
    np.testing.assert_allclose(whole.anomaly_map.numpy(), maps[first], rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(whole.mask.numpy(), maps[first] >= float(api.threshold))
    unfiltered = api.localize(slices)
    # evaluate and detect score and mask each case's filtered maps (the maps stay as made)
    localised = predict(detector, healthy, progress=False)
    scored = with_map_steps(detector, localised)
    np.testing.assert_allclose(scored.scores, detector.scores(
        torch.from_numpy(maps), torch.from_numpy(found.foreground)).numpy(), rtol=1e-6)
    np.testing.assert_array_equal(scored.masks, (maps >= float(detector.threshold))
                                  & found.foreground)
    np.testing.assert_array_equal(scored.maps, found.maps)
    kept = with_map_steps(detector, localised, keep_filtered=True)  # what detect writes
    np.testing.assert_allclose(kept.maps, maps, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(kept.masks, scored.masks)
    np.testing.assert_allclose(unfiltered.anomaly_map.numpy(), found.maps[first], atol=1e-7)

    detect_inputs(filtered, [case], tmp_path / "maps", progress=False)
    detect_inputs(run, [case], tmp_path / "plain", progress=False)
    (row,), (plain,) = read_scores(tmp_path / "maps"), read_scores(tmp_path / "plain")
    assert (row["postprocess"], plain["postprocess"]) == ("interslice_median=3", "")
    assert float(row["threshold"]) == pytest.approx(float(detector.threshold), rel=1e-6)
    written = nib.load(tmp_path / "maps" / "sick_anomaly_map.nii.gz").get_fdata()
    unfiltered = nib.load(tmp_path / "plain" / "sick_anomaly_map.nii.gz").get_fdata()
    assert not np.allclose(written, unfiltered)
    lesion = nib.load(case / "sick_seg.nii.gz").get_fdata() > 0
    assert (nib.load(tmp_path / "maps" / "sick_mask.nii.gz").get_fdata()[lesion] > 0).mean() > 0.5

    metrics = evaluate_run(filtered, data, tmp_path / "eval", resamples=0)
    assert metrics is not None and metrics["postprocess"]["interslice_median"] == 3
    assert metrics["pixel_threshold"] == pytest.approx(float(detector.threshold), rel=1e-6)

    # a benchmark evaluates the run with its recorded step too, unless the entry switches it
    # off; the benchmark-wide steps add to it
    config = build(BenchmarkConfig, {
        "datasets": {"d": str(data)}, "data": {"size": 16}, "resamples": 20,
        "postprocess": {"min_lesion_ml": 0.001},
        "methods": [{"method": "threshold", "label": "recorded", "run": str(filtered)},
                    {"method": "threshold", "label": "off", "run": str(filtered),
                     "postprocess": {"interslice_median": 1}}],
        "reference": "off"})
    with caplog.at_level("INFO"):
        rows = {row["method"]: row for row in run_benchmark_config(
            config, tmp_path, tmp_path / "bench", source="test")}
    assert "off with no map steps, refitted on the dataset" in caplog.text  # recalibrated
    assert "recorded with" not in caplog.text  # as exported
    assert rows["recorded"]["postprocess"] == {**PostProcess().to_dict(),
                                               "interslice_median": 3, "min_lesion_ml": 0.001}
    assert rows["recorded"]["pixel_threshold"] == pytest.approx(metrics["pixel_threshold"])
    assert rows["off"]["postprocess"]["interslice_median"] == 1
    assert rows["off"]["pixel_threshold"] != pytest.approx(metrics["pixel_threshold"], rel=1e-3)
    (comparison,) = csv.DictReader((tmp_path / "bench" / "comparisons.csv").open())
    assert (comparison["method"], comparison["reference"]) == ("recorded", "off")
    report = (tmp_path / "bench" / "report.html").read_text()
    assert "recorded on d: post-processing interslice_median=3, min_lesion_ml=0.001" in report
    with pytest.raises(AnodiffError, match="'off'.*median_size must be odd"):
        run_benchmark_config(replace(config, methods=(replace(
            config.methods[1], postprocess={"median_size": 2}),)), tmp_path,
            tmp_path / "refused", source="test")

    with pytest.raises(AnodiffError, match="add --refit DATA"):
        export_run(run, tmp_path / "unrefitted", postprocess=post)
    edited = tmp_path / "edited"  # run.yaml must agree with what the model was calibrated on
    shutil.copytree(filtered, edited)
    values = yaml.safe_load((edited / "run.yaml").read_text())
    del values["postprocess"]
    (edited / "run.yaml").write_text(yaml.safe_dump(values))
    with pytest.raises(AnodiffError, match=r"map steps none, but .* calibrated with "
                                           r"interslice_median=3; restore run.yaml"):
        load_run(edited, "cpu")
    with pytest.raises(AnodiffError, match="anodiff export RUN --postprocess"):
        detect_inputs(run, [case], tmp_path / "refused", progress=False, postprocess=post)
