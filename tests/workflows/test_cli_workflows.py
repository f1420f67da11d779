"""The command line end to end on a tiny embedded benchmark: synth -> train -> evaluate ->
detect -> benchmark, plus resume and config validation."""

import json
import logging
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from anodiff.cli import app
from anodiff.data.synth import SynthConfig, build
from anodiff.errors import AnodiffError
from anodiff.methods import load

RUNNER = CliRunner()


@pytest.fixture(scope="module")
def tiny_synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    build(out, SynthConfig(size=32, cases=10, tracks=("tumour",)), workers=1)
    return out / "tumour"


def invoke(*args: str) -> str:
    result = RUNNER.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, (result.output, result.exception)
    return result.output


def test_train_evaluate_detect(tiny_synth: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    invoke("train", "threshold", "--data", tiny_synth, "--out", run, "--preset", "quick",
           "--set", "method.channel=0", "--set", "method.mode=bright", "--set", "data.size=32")
    assert (run / "model" / "meta.json").is_file() and (run / "train.log").is_file()
    output = invoke("evaluate", run, "--data", tiny_synth, "--out", tmp_path / "eval")
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert {"image_auroc", "pixel_ap", "dice_max", "hd95_otsu", "n_images"} <= set(metrics)
    assert metrics["pixel_auroc"] > 0.5 and "pixel_ap" in output
    for figure in ("curves_image.png", "curves_pixel.png", "grid.png", "dice_threshold.png",
                   "dice_cases.png", "detection_by_size.png"):
        assert (tmp_path / "eval" / figure).is_file()
    report = (tmp_path / "eval" / "report.html").read_text()
    assert report.count("data:image/png;base64,") == 6 and "Dice per case at the FPR" in report
    assert metrics["hd95_unit"] == "mm" and set(metrics["case_dice_fpr"]) <= set(
        p.name for p in tiny_synth.iterdir())
    case = next(p for p in sorted(tiny_synth.iterdir()) if p.is_dir())
    invoke("detect", run, case, "--out", tmp_path / "maps")
    assert (tmp_path / "maps" / f"{case.name}_anomaly_map.nii.gz").is_file()
    assert (tmp_path / "maps" / "scores.csv").read_text().count("\n") == 2


def test_train_refuses_other_settings_on_an_existing_run(tiny_synth: Path, tmp_path: Path
                                                         ) -> None:
    run = tmp_path / "run"
    invoke("train", "threshold", "--data", tiny_synth, "--out", run, "--preset", "quick",
           "--set", "data.size=32")
    invoke("train", "threshold", "--data", tiny_synth, "--out", run, "--preset", "quick",
           "--set", "data.size=32")  # the same settings: allowed (resumes / refits)
    result = RUNNER.invoke(app, ["train", "threshold", "--data", str(tiny_synth), "--out",
                                 str(run), "--preset", "quick", "--set", "data.size=24"])
    assert isinstance(result.exception, AnodiffError)
    assert "other settings" in str(result.exception)


@pytest.mark.parametrize(
    ("setting", "message"),
    [("method.mode=sideways", "method.mode: 'sideways' is not one of"),
     ("method.bins=many", "method.bins: expected an integer"),
     ("data.sise=32", "data.sise: unknown setting"),
     ("data.context=9", "context must be 0 to 8 neighbouring slices"),
     ("model.depth=3", "model: unknown section")],
)
def test_bad_settings_are_named(tiny_synth: Path, tmp_path: Path, setting: str, message: str
                                ) -> None:
    result = RUNNER.invoke(app, ["train", "threshold", "--data", str(tiny_synth), "--out",
                                 str(tmp_path / "run"), "--set", setting])
    assert isinstance(result.exception, AnodiffError)
    assert message in str(result.exception)
    assert not (tmp_path / "run").exists()  # nothing is written for a bad config


def test_benchmark_writes_tables_curves_and_report(tiny_synth: Path, tmp_path: Path) -> None:
    config = tmp_path / "bench.yaml"
    config.write_text(
        f"title: tiny\ndatasets: {{tumour: {tiny_synth}}}\n"
        "methods:\n  - {method: threshold, preset: quick, label: rarity}\n"
        "  - {method: threshold, preset: quick, label: flair,"
        " settings: {mode: bright, channel: 0}}\ndata: {size: 32}\n")
    invoke("benchmark", config, "--out", tmp_path / "bench")
    rows = json.loads((tmp_path / "bench" / "results.json").read_text())
    assert [(r["dataset"], r["method"]) for r in rows] == [("tumour", "rarity"),
                                                          ("tumour", "flair")]
    table = (tmp_path / "bench" / "results.md").read_text()
    assert table.startswith("| Dataset | Sequences | Method | Dice per case at the FPR")
    assert "| dataset | sequences | method | dice_fpr | volume_dice_fpr |" in table  # folded
    csv_header = (tmp_path / "bench" / "results.csv").read_text().splitlines()[0]
    assert csv_header.startswith("dataset,sequences,method,dice_fpr,volume_dice_fpr,")
    html = (tmp_path / "bench" / "report.html").read_text()
    # per method: the grid and Dice against the threshold; per dataset: Dice per case,
    # detection by size, image and pixel curves
    assert html.count("data:image/png;base64,") == 2 * 2 + 4
    # the FLAIR threshold must beat a random map on the tumour track (AP above base rate)
    flair = rows[1]
    assert flair["pixel_auroc"] > 0.8 and flair["sequences"] == "flair+t1+t2"
    assert flair["pixel_ap_ci_low"] <= flair["pixel_ap"] <= flair["pixel_ap_ci_high"]
    # both against the first threshold baseline, with a paired bootstrap p-value
    comparison = json.loads((tmp_path / "bench" / "comparisons.json").read_text())
    assert [(c["method"], c["reference"]) for c in comparison] == [("flair", "rarity")]
    assert 0 <= comparison[0]["pixel_ap_p"] <= 1 and "Against rarity" in html


def test_benchmark_evaluates_a_finished_run_on_fewer_cases(tiny_synth: Path, tmp_path: Path
                                                           ) -> None:
    run = tmp_path / "run"
    invoke("train", "threshold", "--data", tiny_synth, "--out", run, "--preset", "quick",
           "--set", "data.size=32")
    config = tmp_path / "bench.yaml"
    config.write_text(
        f"datasets: {{tumour: {tiny_synth}}}\n"
        "methods:\n  - {method: threshold, label: trained-before, run: run}\n"
        "data: {size: 32}\nmax_cases: 1\n")
    invoke("benchmark", config, "--out", tmp_path / "bench")
    assert not (tmp_path / "bench" / "runs").exists()  # nothing was trained
    row = json.loads((tmp_path / "bench" / "results.json").read_text())[0]
    full = json.loads(invoke_json_metrics(run, tiny_synth, tmp_path / "eval"))
    assert 0 < row["n_images"] < full["n_images"]
    config.write_text(config.read_text().replace("max_cases: 1", "max_cases: 0"))
    result = RUNNER.invoke(app, ["benchmark", str(config), "--out", str(tmp_path / "b2")])
    assert result.exit_code != 0 and "max_cases" in str(result.exception)


def test_benchmark_gives_a_2_5_d_run_the_same_slices_with_their_neighbours(
        tiny_synth: Path, tmp_path: Path) -> None:
    """A finished run trained with context slices is evaluated on the benchmark's slices
    with their neighbours as its extra channels: a FLAIR threshold, which reads the slice's
    own FLAIR channel only, scores exactly as its 2-D twin, on the same slices."""
    for name, context in (("flat", 0), ("slab", 1)):
        invoke("train", "threshold", "--data", tiny_synth, "--out", tmp_path / name,
               "--preset", "quick", "--set", "method.channel=flair", "--set",
               "method.mode=bright", "--set", "data.size=32", "--set", f"data.context={context}")
    assert load(tmp_path / "slab").input_shape[0] == 9
    config = tmp_path / "bench.yaml"
    config.write_text(
        f"datasets: {{tumour: {tiny_synth}}}\n"
        "methods:\n  - {method: threshold, label: flat, run: flat}\n"
        "  - {method: threshold, label: slab, run: slab}\n"
        "data: {size: 32}\nresamples: 0\n")
    invoke("benchmark", config, "--out", tmp_path / "bench")
    flat, slab = json.loads((tmp_path / "bench" / "results.json").read_text())
    assert slab["sequences"] == flat["sequences"] == "flair+t1+t2"
    for key in ("n_images", "pixel_ap", "pixel_auroc", "dice_fpr", "image_auroc"):
        assert slab[key] == flat[key], key


@pytest.mark.slow  # 35 s: six evaluations and two reports; the default suite's 3-min budget
def test_benchmark_runs_sequence_sets_against_the_better_polarity(tiny_synth: Path,
                                                                  tmp_path: Path) -> None:
    config = tmp_path / "bench.yaml"
    config.write_text(
        f"datasets: {{tumour: {tiny_synth}}}\n"
        "methods:\n  - {method: threshold, preset: quick, label: rarity}\n"
        "  - {method: threshold, preset: quick, label: bright, settings: {mode: bright}}\n"
        "  - {method: threshold, preset: quick, label: dark, settings: {mode: dark}}\n"
        "data: {size: 32}\nresamples: 50\nsequence_sets: [[t2], [t1]]\n"
        "reference: [bright, dark]\n")
    invoke("benchmark", config, "--out", tmp_path / "bench")
    rows = json.loads((tmp_path / "bench" / "results.json").read_text())
    assert [(r["sequences"], r["method"]) for r in rows] == [
        (seq, m) for seq in ("t2", "t1") for m in ("rarity", "bright", "dark")]
    assert (tmp_path / "bench" / "runs" / "tumour" / "t1" / "dark" / "model").is_dir()
    comparisons = json.loads((tmp_path / "bench" / "comparisons.json").read_text())
    for seq in ("t2", "t1"):
        ap = {r["method"]: r["pixel_ap"] for r in rows if r["sequences"] == seq}
        better = max(("bright", "dark"), key=ap.get)
        compared = [c for c in comparisons if c["sequences"] == seq]
        assert {c["reference"] for c in compared} == {better}
        assert sorted(c["method"] for c in compared) == sorted({"rarity", "bright", "dark"}
                                                               - {better})
    # a finished run trained on other sequences is refused, naming both
    run = tmp_path / "bench" / "runs" / "tumour" / "t2" / "rarity"
    config.write_text(config.read_text().replace(
        "  - {method: threshold, preset: quick, label: dark, settings: {mode: dark}}\n",
        f"  - {{method: threshold, label: dark, run: {run}}}\n"))
    result = RUNNER.invoke(app, ["benchmark", str(config), "--out", str(tmp_path / "b2")])
    assert isinstance(result.exception, AnodiffError)
    assert "trained on the sequences ['t2']" in str(result.exception)
    assert "evaluates ['t1']" in str(result.exception)


@pytest.mark.slow
def test_benchmark_retunes_a_finished_run_as_an_export_would(tiny_synth: Path,
                                                             tmp_path: Path) -> None:
    run = tmp_path / "run"
    invoke("train", "threshold", "--data", tiny_synth, "--out", run, "--preset", "quick",
           "--set", "data.size=32", "--set", "method.mode=bright", "--set", "method.channel=0")
    config = tmp_path / "bench.yaml"
    config.write_text(
        f"datasets: {{tumour: {tiny_synth}}}\n"
        "methods:\n  - {method: threshold, label: as-trained, run: run}\n"
        "  - {method: threshold, label: dark, run: run, settings: {mode: dark}}\n"
        "data: {size: 32}\nresamples: 0\n")
    invoke("benchmark", config, "--out", tmp_path / "bench")
    rows = {r["method"]: r for r in json.loads((tmp_path / "bench" / "results.json").read_text())}
    invoke("export", run, "--out", tmp_path / "dark", "--set", "mode=dark", "--refit",
           tiny_synth)
    exported = json.loads(invoke_json_metrics(tmp_path / "dark", tiny_synth, tmp_path / "e"))
    assert rows["dark"]["pixel_ap"] == pytest.approx(exported["pixel_ap"])
    assert rows["dark"]["pixel_ap"] != pytest.approx(rows["as-trained"]["pixel_ap"])
    assert load(run / "model").config.mode == "bright"  # the run itself is untouched
    # settings a finished run cannot take are refused before anything is evaluated
    for entry, message in [("settings: {colour: red}", "unknown setting(s) ['colour']"),
                           ("preset: paper2", "unknown preset 'paper2'")]:
        config.write_text(config.read_text().replace("settings: {mode: dark}", entry))
        result = RUNNER.invoke(app, ["benchmark", str(config), "--out", str(tmp_path / "b")])
        assert isinstance(result.exception, AnodiffError)
        assert message in str(result.exception) and "'dark'" in str(result.exception)
        assert not (tmp_path / "b" / "eval").exists()
        config.write_text(config.read_text().replace(entry, "settings: {mode: dark}"))


@pytest.mark.parametrize(("line", "message"), [
    ("sequence_sets: [[t2, t2]]", "every set must be distinct"),
    ("sequence_sets: []", "distinct, non-empty sets"),
    ("reference: [rarity, nothing]", "reference 'nothing' is not a method label"),
])
def test_benchmark_refuses_bad_sequence_sets_and_references(tiny_synth: Path, tmp_path: Path,
                                                           line: str, message: str) -> None:
    config = tmp_path / "bench.yaml"
    config.write_text(f"datasets: {{tumour: {tiny_synth}}}\n"
                      "methods:\n  - {method: threshold, preset: quick, label: rarity}\n"
                      f"data: {{size: 32}}\n{line}\n")
    result = RUNNER.invoke(app, ["benchmark", str(config), "--out", str(tmp_path / "b")])
    assert isinstance(result.exception, AnodiffError) and message in str(result.exception)
    assert not (tmp_path / "b").exists()


def invoke_json_metrics(run: Path, data: Path, out: Path) -> str:
    invoke("evaluate", run, "--data", data, "--out", out)
    return (out / "metrics.json").read_text()


def test_export_half_halves_the_weights_and_keeps_the_maps(tiny_synth: Path, tmp_path: Path
                                                           ) -> None:
    run = tmp_path / "run"
    invoke("train", "autoencoder", "--data", tiny_synth, "--out", run, "--preset", "quick",
           "--set", "data.size=32")
    output = invoke("export", run, "--out", tmp_path / "small", "--half")
    assert "largest weight change" in output
    assert not (tmp_path / "small" / "checkpoints").exists()
    original = load(run / "model")
    small = load(tmp_path / "small" / "model")
    size = (run / "model" / "detector.safetensors").stat().st_size
    half_size = (tmp_path / "small" / "model" / "detector.safetensors").stat().st_size
    assert half_size < 0.6 * size
    assert torch.equal(small.threshold, original.threshold)  # fitted values keep precision
    images = torch.rand(4, *original.input_shape)
    a, b = original.localize(images).anomaly_map, small.localize(images).anomaly_map
    assert (a - b).abs().max() < 1e-2 * a.abs().max()
    result = RUNNER.invoke(app, ["export", str(run), "--out", str(tmp_path / "small")])
    assert result.exit_code != 0 and "not empty" in str(result.exception)


def test_export_refits_invdetect_for_a_new_inversion_level(tiny_synth: Path,
                                                           tmp_path: Path) -> None:
    run = tmp_path / "run"
    invoke("train", "invdetect", "--data", tiny_synth, "--out", run, "--preset", "quick",
           "--set", "data.size=32")
    stale = RUNNER.invoke(app, ["export", str(run), "--out", str(tmp_path / "x"),
                                "--set", "level=20"])
    assert stale.exit_code != 0 and "stale" in str(stale.exception)
    invoke("export", run, "--out", tmp_path / "l20", "--set", "level=20", "--refit", tiny_synth)
    original, refitted = load(run / "model"), load(tmp_path / "l20" / "model")
    assert refitted.config.level == 20 and original.config.level == 30
    assert not torch.equal(original.one_class.support_vectors,
                           refitted.one_class.support_vectors)
    images = torch.rand(2, *original.input_shape)
    assert refitted.localize(images).anomaly_map.shape == (2, 32, 32)
    result = RUNNER.invoke(app, ["export", str(run), "--out", str(tmp_path / "y"), "--refit",
                                 str(tiny_synth)])
    assert result.exit_code == 0  # a refit with unchanged settings reproduces the fit
    same = load(tmp_path / "y" / "model")
    assert torch.allclose(original.one_class.support_vectors, same.one_class.support_vectors)


def test_export_recalibrates_a_healthy_fpr_threshold(tiny_synth: Path, tmp_path: Path) -> None:
    run = tmp_path / "thr"
    invoke("train", "threshold", "--data", tiny_synth, "--out", run, "--preset", "quick",
           "--set", "data.size=32")
    stale = RUNNER.invoke(app, ["export", str(run), "--out", str(tmp_path / "z"),
                                "--set", "fpr=0.05"])
    assert stale.exit_code != 0 and "stale" in str(stale.exception)
    invoke("export", run, "--out", tmp_path / "same", "--refit", tiny_synth)
    invoke("export", run, "--out", tmp_path / "fpr5", "--set", "fpr=0.05", "--refit", tiny_synth)
    original = load(run / "model")
    assert torch.equal(load(tmp_path / "same" / "model").threshold, original.threshold)
    assert float(load(tmp_path / "fpr5" / "model").threshold) < float(original.threshold)


@pytest.mark.slow  # trains AnoDDPM from the command line, refits and evaluates the export
def test_export_puts_an_anoddpm_model_under_thor(tiny_synth: Path, tmp_path: Path,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    """THOR decodes AnoDDPM's DDPM differently: an export reuses the trained network and
    says which of the run's settings it keeps against THOR's preset."""
    run = tmp_path / "ano"
    invoke("train", "anoddpm", "--data", tiny_synth, "--out", run, "--preset", "quick",
           "--set", "data.size=32", "--set", "method.noise=gaussian")
    unrefitted = RUNNER.invoke(app, ["export", str(run), "--out", str(tmp_path / "x"),
                                     "--method", "thor"])
    assert unrefitted.exit_code != 0 and "--refit" in str(unrefitted.exception)
    other = RUNNER.invoke(app, ["export", str(run), "--out", str(tmp_path / "y"), "--method",
                                "unet", "--refit", str(tiny_synth)])
    assert other.exit_code != 0 and "train it instead" in str(other.exception)
    with caplog.at_level(logging.INFO, logger="anodiff"):
        invoke("export", run, "--out", tmp_path / "thor", "--method", "thor", "--set",
               "level=40", "--refit", tiny_synth)
    kept = next(line for line in caplog.messages if "keeps the anoddpm run's" in line)
    assert "noise=gaussian" in kept and "level=" not in kept  # --set level wins, silently
    original, thor = load(run / "model"), load(tmp_path / "thor" / "model")
    assert thor.name == "thor" and thor.config.noise == "gaussian"  # the training's noise
    assert (thor.config.level, thor.config.harmonise) == (40, (30, 20, 10))
    assert all(torch.equal(a, b) for a, b in zip(original.unet.parameters(),
                                                  thor.unet.parameters(), strict=True))
    assert torch.isfinite(thor.threshold) and not torch.equal(thor.threshold, original.threshold)
    assert "method: thor" in (tmp_path / "thor" / "run.yaml").read_text()
    invoke("evaluate", tmp_path / "thor", "--data", tiny_synth, "--out", tmp_path / "eval")
    assert (tmp_path / "eval" / "metrics.json").is_file()


@pytest.mark.slow  # the conformance suite covers fit, localize, save and load
def test_imgcond_quick_preset_end_to_end(tiny_synth: Path, tmp_path: Path) -> None:
    """Baugh's ensemble from the command line: members stop on the val split, evaluate runs."""
    run = tmp_path / "run"
    invoke("train", "imgcond", "--data", tiny_synth, "--out", run, "--preset", "quick",
           "--set", "data.size=32")
    assert sorted(p.name for p in run.glob("member_*")) == ["member_2", "member_6"]
    invoke("evaluate", run, "--data", tiny_synth, "--out", tmp_path / "eval")
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["nfe_per_image"] == 10 and 0 <= metrics["pixel_ap"] <= 1


@pytest.mark.slow  # the conformance suite covers fit, localize, save and load
def test_fndm_quick_preset_end_to_end(tiny_synth: Path, tmp_path: Path) -> None:
    """FNDM from the command line: classifier, memory bank, hybrid UNet, evaluation."""
    run = tmp_path / "run"
    invoke("train", "fndm", "--data", tiny_synth, "--out", run, "--preset", "quick",
           "--set", "data.size=32")
    assert (run / "classifier").is_dir() and (run / "unet").is_dir()
    invoke("evaluate", run, "--data", tiny_synth, "--out", tmp_path / "eval")
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["nfe_per_image"] == 20 and {"dice_otsu", "hd95_otsu", "vs_otsu"} <= set(metrics)


def test_evaluate_names_what_it_cannot_calibrate(tiny_synth: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    invoke("train", "threshold", "--data", tiny_synth, "--out", run, "--preset", "quick",
           "--set", "data.size=32")
    bad_rate = RUNNER.invoke(app, ["evaluate", str(run), "--data", str(tiny_synth), "--out",
                                   str(tmp_path / "e1"), "--fpr", "1.5"])
    assert isinstance(bad_rate.exception, AnodiffError) and "(0, 1)" in str(bad_rate.exception)
    no_val = tmp_path / "no_val"  # the same cases, none of them in a val split
    no_val.mkdir()
    for case in (p for p in tiny_synth.iterdir() if p.is_dir()):
        (no_val / case.name).symlink_to(case, target_is_directory=True)
    (no_val / "splits.csv").write_text(
        (tiny_synth / "splits.csv").read_text().replace(",val", ",train"))
    refused = RUNNER.invoke(app, ["evaluate", str(run), "--data", str(no_val), "--out",
                                  str(tmp_path / "e2")])
    assert isinstance(refused.exception, AnodiffError)
    assert "no healthy validation slices" in str(refused.exception)
    assert "splits.csv" in str(refused.exception)


def test_evaluate_post_processes_validation_and_test_maps_alike(tiny_synth: Path,
                                                                 tmp_path: Path) -> None:
    """--postprocess reaches the thresholds and the metrics, is recorded, and bad settings
    are one line naming the flag."""
    run = tmp_path / "run"
    invoke("train", "threshold", "--data", tiny_synth, "--out", run, "--preset", "quick",
           "--set", "method.channel=0", "--set", "method.mode=bright", "--set", "data.size=32")
    invoke("evaluate", run, "--data", tiny_synth, "--out", tmp_path / "plain", "--resamples", 0)
    invoke("evaluate", run, "--data", tiny_synth, "--out", tmp_path / "median", "--resamples", 0,
           "--postprocess", "interslice_median=3", "--postprocess", "median_size=3")
    plain, median = (json.loads((tmp_path / name / "metrics.json").read_text())
                     for name in ("plain", "median"))
    assert plain["postprocess"]["interslice_median"] == 1
    assert median["postprocess"]["interslice_median"] == 3
    assert median["postprocess"]["median_size"] == 3
    assert median["pixel_threshold"] != plain["pixel_threshold"]  # calibrated on filtered maps
    assert median["pixel_ap"] != plain["pixel_ap"]
    assert "interslice_median: 3" in (tmp_path / "median" / "report.html").read_text()
    for pair, message in (("interslice_median=2", "interslice_median must be odd"),
                          ("radius=3", "--postprocess.radius: unknown setting"),
                          ("interslice_median", "--postprocess 'interslice_median': expected "
                                                "KEY=VALUE, e.g. interslice_median=3")):
        refused = RUNNER.invoke(app, ["evaluate", str(run), "--data", str(tiny_synth), "--out",
                                      str(tmp_path / "refused"), "--postprocess", pair])
        assert isinstance(refused.exception, AnodiffError) and message in str(
            refused.exception), refused.exception
        assert not (tmp_path / "refused").exists()


def test_a_new_users_first_commands(tiny_synth: Path, tmp_path: Path) -> None:
    """Issue 20's walls replayed: sequences and channels by name, one FLAIR file on a
    FLAIR-only run, a folder inspected first, plain log lines off a terminal, -q, and each
    failure printed once."""
    lines = invoke("data", "inspect", tiny_synth, "--sequences", "FLAIR").splitlines()
    assert lines[0].startswith(f"{tiny_synth}: cases layout, 10 case(s); sequences found: "
                               "flair, t1, t2")
    assert "10 of 10 case(s) have every sequence" in lines
    run = tmp_path / "run"
    output = invoke("train", "threshold", "--data", tiny_synth, "--out", run, "--preset",
                    "quick", "--set", "data.sequences=[FLAIR]", "--set", "method.channel=flair",
                    "--set", "method.mode=bright", "--set", "data.size=32")
    assert "\r" not in output and "train threshold (preset quick)" in output  # a plain line
    assert "model in" in output
    case = next(p for p in sorted(tiny_synth.iterdir()) if p.is_dir())
    flair = case / f"{case.name}_flair.nii.gz"
    quiet = invoke("-q", "detect", run, flair, "--out", tmp_path / "maps")
    assert quiet.strip().splitlines() == [
        f"1 of 1 cases done; scores in {tmp_path / 'maps' / 'scores.csv'}"]
    assert "MISSING" not in invoke("data", "inspect", case, "--run", run)
    result = RUNNER.invoke(app, ["detect", str(run), str(tmp_path / "nowhere"), str(flair),
                                 "--out", str(tmp_path / "maps2")])
    assert result.exit_code == 1
    assert result.output.count("failed:") == 1 and result.output.count("nowhere") == 1
    both = RUNNER.invoke(app, ["-q", "-v", "methods"])
    assert both.exit_code != 0 and "contradict" in str(both.exception)
