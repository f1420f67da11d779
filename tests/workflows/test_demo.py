"""The demo's shipped checkpoint and configuration; the full demo run is a slow test."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from anodiff.cli import app
from anodiff.methods.anoddpm import AnoDDPM
from anodiff.workflows.demo import DEMO_DATA, demo_checkpoint, demo_config, verdict
from anodiff.workflows.export import size_bytes
from anodiff.workflows.run import load_run, read_run


def test_the_shipped_checkpoint_is_small_loads_and_matches_the_demo_data() -> None:
    folder = demo_checkpoint()
    assert size_bytes(folder) < 5_000_000
    assert (folder / "RECIPE.md").is_file()
    detector, spec = load_run(folder)
    assert detector.name == "anoddpm" and spec.preset == "cpu"
    assert detector.input_shape == (3, DEMO_DATA.size, DEMO_DATA.size)
    # the demo opens its data exactly as the checkpoint's training run did
    config = demo_config(folder, cases=2)
    assert config.data.size == spec.data.size and spec.data.sequences == ("flair", "t1", "t2")
    assert read_run(folder).data_root.endswith("tumour")


@pytest.mark.slow
def test_demo_writes_a_report_with_anoddpm_the_baselines_and_a_verdict(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["demo", "--out", str(tmp_path), "--cases", "1"])
    assert result.exit_code == 0, (result.output, result.exception)
    rows = json.loads((tmp_path / "results.json").read_text())
    assert [r["method"] for r in rows] == ["anoddpm", "threshold-flair", "threshold-rarity"]
    html = (tmp_path / "report.html").read_text()
    # per method: its grid and Dice against the threshold; for the track: Dice per case,
    # detection by size, image and pixel curves
    assert "AnoDDPM" in html and html.count("data:image/png;base64,") == 3 * 2 + 4
    assert verdict(rows).split(":")[0] in html and verdict(rows) in result.output


def test_verdict_says_where_the_threshold_still_wins() -> None:
    rows = [{"method": "anoddpm", "pixel_ap": 0.6, "volume_dice_fpr": 0.5, "image_auroc": 0.9},
            {"method": "threshold-flair", "pixel_ap": 0.7, "volume_dice_fpr": 0.4,
             "image_auroc": 0.8}]
    sentence = verdict(rows)
    assert sentence.startswith("Where the threshold-flair still wins on these cases: pixel AP "
                               "0.700 vs 0.600;")
    assert "anoddpm wins on per-case Dice at the healthy-FPR threshold, image AUROC" in sentence
    rows[1]["pixel_ap"] = 0.5
    assert verdict(rows).startswith("On these cases anoddpm beats the threshold-flair on every")


def test_the_shipped_checkpoint_is_what_anodiff_train_makes_today() -> None:
    """Its settings equal the current cpu preset: `anodiff train anoddpm` reproduces it."""
    detector, _ = load_run(demo_checkpoint())
    assert detector.config == AnoDDPM.presets["cpu"]
