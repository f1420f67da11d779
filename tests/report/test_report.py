import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from sklearn.metrics import f1_score

from anodiff.evaluation.metrics import best_dice
from anodiff.report import figures
from anodiff.report.figures import (
    curves,
    detection_by_size,
    dice_against_threshold,
    dice_distribution,
    qualitative_grid,
)
from anodiff.report.html import write_report
from anodiff.report.tables import HEADLINE, results_markdown

ROW = {"dataset": "tumour", "sequences": "t2", "method": "anoddpm", "volume_dice_fpr": 0.2554,
       "volume_dice_fpr_ci_low": 0.2011, "volume_dice_fpr_ci_high": 0.3102,
       "healthy_fp_area_fpr": 0.00843, "pixel_ap": 0.271, "hd95_fpr": 7.25,
       "seconds_per_image": 1.234, "image_auroc": math.nan, "dice_max": 0.5}


def test_headline_cells_carry_units_intervals_and_dashes() -> None:
    cells = {c.key: c.cell(ROW) for c in HEADLINE if c.key in ROW}
    assert cells["volume_dice_fpr"] == "0.255 (0.201–0.310)"
    assert cells["healthy_fp_area_fpr"] == "0.84"  # percent, two places
    assert cells["pixel_ap"] == "0.271"  # no interval measured: none shown
    assert cells["image_auroc"] == "–"
    headers = {c.key: c.header() for c in HEADLINE}
    assert headers["hd95_fpr"] == "HD95 at the FPR threshold (mm)"
    assert headers["seconds_per_image"] == "Time per slice (s)"
    assert headers["healthy_fp_area_fpr"] == "Healthy brain flagged (%)"


def test_results_markdown_puts_the_headline_first_and_folds_the_rest() -> None:
    pixel_row = {**ROW, "hd95_unit": "pixel"}
    text = results_markdown([ROW, pixel_row], ["dataset", "method", "dice_max", "hd95_fpr"])
    headline, folded = text.split("<details>")
    assert headline.startswith("| Dataset | Sequences | Method | Dice per case at the FPR "
                               "threshold | Healthy brain flagged (%) | Pixel AP |")
    assert "HD95 at the FPR threshold (pixels)" in headline  # one row on the pixel grid
    assert "| dataset | method | dice_max | hd95_fpr (pixels) |" in folded
    assert "| tumour | anoddpm | 0.500 | 7.250 |" in folded and folded.rstrip().endswith(
        "</details>")


def test_figures_and_a_self_contained_report(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    truth = np.zeros((3, 16, 16), bool)
    truth[:, 5:9, 5:9] = True
    maps = rng.random((3, 16, 16)) + truth
    images = rng.random((3, 2, 16, 16))
    grid = qualitative_grid(images, truth, maps, maps > 1.2, images * 0.9, tmp_path / "g.png",
                            "method on track", channel_names=["t1", "flair"])
    curve = curves({"a": (truth, maps), "b": (truth, rng.random(truth.shape))},
                   tmp_path / "c.png", "curves")
    assert grid.read_bytes()[:4] == b"\x89PNG" and curve.read_bytes()[:4] == b"\x89PNG"
    settings = {"seed": 0, "data": {"size": 64, "sequences": ["t2"]}, "fpr": 0.01}
    report = write_report(
        tmp_path / "report.html", "Benchmark <test>",
        rows=[{"method": "threshold", "dataset": "tumour", "pixel_ap": 0.5,
               "dice_max": float("nan")}],
        columns=["method", "dataset", "pixel_ap", "dice_max"],
        figures=[("grid", grid), ("curves", curve)], settings=settings,
    )
    text = report.read_text()
    assert "Benchmark &lt;test&gt;" in text  # escaped
    assert text.count("data:image/png;base64,") == 2  # figures embedded, nothing linked
    assert not re.search(r'src="(?!data:)', text)
    assert '<th title="pixel_ap">Pixel AP</th>' in text  # headline, titled, key as tooltip
    assert "<details><summary>All 4 columns" in text  # every column, folded
    assert "<td>0.500</td>" in text and "<td>–</td>" in text
    assert "pixel_ap</dt>" in text  # the glossary explains the columns shown
    shown = re.search(r"<pre>(.*)</pre>", text, re.S)
    assert shown and yaml.safe_load(shown.group(1)) == settings  # readable YAML, not a repr


def test_the_grid_has_a_colour_bar_and_row_labels(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    drawn: list[Any] = []
    monkeypatch.setattr(figures, "_save", lambda fig, path: drawn.append(fig))
    rng = np.random.default_rng(1)
    maps = rng.random((2, 8, 8))
    qualitative_grid(rng.random((2, 1, 8, 8)), maps > 0.9, maps, None, None,
                     tmp_path / "g.png", "t", row_labels=["case_7, slice 31", "case_9, slice 2"])
    fig = drawn[0]
    panels, bars = fig.axes[:6], fig.axes[6:]  # 2 rows x (input, map, truth), then the bar
    assert len(bars) == 1 and bars[0].get_ylabel() == "anomaly map"
    assert [panels[0].get_ylabel(), panels[3].get_ylabel()] == ["case_7, slice 31",
                                                              "case_9, slice 2"]


def test_dice_against_threshold_marks_points_on_the_exact_curve(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The marked Dice is sklearn's F1 of the pixels at that threshold, and the curve's
    maximum is the exact best Dice of the protocol."""
    drawn: list[Any] = []
    monkeypatch.setattr(figures, "_save", lambda fig, path: drawn.append(fig))
    rng = np.random.default_rng(2)
    truth = rng.random(4000) < 0.1
    scores = rng.random(4000) + truth * rng.random(4000)
    best = best_dice(truth, scores)
    dice_against_threshold(truth, scores, {"fpr": 0.9, "best": best.threshold},
                           tmp_path / "d.png", "t")
    ax = drawn[0].axes[0]
    curve = ax.lines[0].get_ydata()
    assert max(curve) == pytest.approx(best.dice)
    points = [c.get_offsets()[0] for c in ax.collections]
    assert points[0][1] == pytest.approx(f1_score(truth, scores >= 0.9))
    assert points[1][1] == pytest.approx(best.dice)


def test_case_dice_and_size_plots_are_written(tmp_path: Path) -> None:
    box = dice_distribution({"a": [0.1, 0.5, math.nan, 0.9], "b": [0.0, 0.2]},
                            tmp_path / "box.png", "Dice per case")
    bars = detection_by_size(
        [{"method": "a", "detection_rate_small_fpr": 0.2, "detection_rate_medium_fpr": math.nan,
          "detection_rate_large_fpr": 1.0, "n_lesions_small": 5, "n_lesions_medium": 0,
          "n_lesions_large": 2}], tmp_path / "bars.png", "found", (1.0, 10.0))
    assert box.read_bytes()[:4] == bars.read_bytes()[:4] == b"\x89PNG"
