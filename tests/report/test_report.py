import re
from pathlib import Path

import numpy as np

from anodiff.report.figures import curves, qualitative_grid
from anodiff.report.html import write_report


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
    report = write_report(
        tmp_path / "report.html", "Benchmark <test>",
        rows=[{"method": "threshold", "dataset": "tumour", "pixel_ap": 0.5,
               "dice_max": float("nan")}],
        columns=["method", "dataset", "pixel_ap", "dice_max"],
        figures=[("grid", grid), ("curves", curve)], settings={"seed": 0},
    )
    text = report.read_text()
    assert "Benchmark &lt;test&gt;" in text  # escaped
    assert text.count("data:image/png;base64,") == 2  # figures embedded, nothing linked
    assert not re.search(r'src="(?!data:)', text)
    assert "<td>0.500</td>" in text and "<td>–</td>" in text
    assert "pixel_ap</dt>" in text  # the glossary explains the columns shown
