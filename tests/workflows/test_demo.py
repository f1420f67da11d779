"""The demo's shipped checkpoint and configuration; the full demo run is a slow test."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from anodiff.cli import app
from anodiff.methods.diffano import DiffAno
from anodiff.workflows.demo import DEMO_DATA, demo_checkpoint, demo_config
from anodiff.workflows.export import size_bytes
from anodiff.workflows.run import load_run, read_run


def test_the_shipped_checkpoint_is_small_loads_and_matches_the_demo_data() -> None:
    folder = demo_checkpoint()
    assert size_bytes(folder) < 5_000_000
    assert (folder / "RECIPE.md").is_file()
    detector, spec = load_run(folder)
    assert detector.name == "diffano" and spec.preset == "cpu"
    assert detector.input_shape == (3, DEMO_DATA.size, DEMO_DATA.size)
    # the demo opens its data exactly as the checkpoint's training run did
    config = demo_config(folder, cases=2)
    assert config.data.size == spec.data.size and spec.data.sequences == ("flair", "t1", "t2")
    assert read_run(folder).data_root.endswith("tumour")


@pytest.mark.slow
def test_demo_writes_a_report_with_diffano_and_the_baselines(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["demo", "--out", str(tmp_path), "--cases", "1"])
    assert result.exit_code == 0, (result.output, result.exception)
    rows = json.loads((tmp_path / "results.json").read_text())
    assert [r["method"] for r in rows] == ["diffano", "threshold-flair", "threshold-rarity"]
    html = (tmp_path / "report.html").read_text()
    assert "DiffANO" in html and html.count("data:image/png;base64,") == 5


def test_the_shipped_checkpoint_is_what_anodiff_train_makes_today() -> None:
    """Its settings equal the current cpu preset: `anodiff train diffano` reproduces it."""
    detector, _ = load_run(demo_checkpoint())
    assert detector.config == DiffAno.presets["cpu"]
