"""``anodiff evaluate``: a run's detector on a dataset's test split -> metrics.json + figures.

Thresholds a deployment could use are calibrated on the healthy validation slices of the
same dataset (see :func:`anodiff.evaluation.runner.evaluate_predictions`); the test split is
used for evaluation only.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from anodiff.data import SliceDataset
from anodiff.errors import AnodiffError
from anodiff.evaluation.bootstrap import DEFAULT_RESAMPLES
from anodiff.evaluation.runner import Predictions, evaluate_predictions, predict
from anodiff.methods import Detector
from anodiff.outputs import prepare_output_folder, write_text_atomic
from anodiff.report.figures import curves, qualitative_grid
from anodiff.scoring.postprocess import PostProcess
from anodiff.scoring.thresholds import per_image_otsu
from anodiff.workflows.run import load_run, run_log

log = logging.getLogger("anodiff")


def json_ready(value: Any) -> Any:
    """NaN -> None so the file is strict JSON (readable by any tool)."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_ready(v) for v in value]
    if isinstance(value, np.generic):
        return json_ready(value.item())
    return value


def grid_rows(test: Predictions, count: int = 6) -> np.ndarray:
    """Example rows for the grid: lesions from the largest down, then the two healthy slices
    with the most brain (typical anatomy rather than the skull base)."""
    lesion_area = test.truth.reshape(len(test.truth), -1).sum(1)
    anomalous = np.flatnonzero(lesion_area > 0)
    spread = anomalous[np.argsort(-lesion_area[anomalous])]
    picks = spread[np.linspace(0, len(spread) - 1, min(count - 2, len(spread))).astype(int)] \
        if len(spread) else spread
    brain = test.foreground.reshape(len(test.truth), -1).sum(1)
    healthy_rows = np.flatnonzero(lesion_area == 0)
    healthy = healthy_rows[np.argsort(-brain[healthy_rows])][:2]
    return np.concatenate([picks, healthy]).astype(int)


def evaluate_detector(
    detector: Detector, data: SliceDataset, out: Path, *, title: str,
    postprocess: PostProcess | None = None, fpr: float = 0.01, batch_size: int = 32,
    resamples: int = DEFAULT_RESAMPLES,
) -> tuple[dict[str, Any], Predictions]:
    """Localise the test split, evaluate (with ``resamples`` case-bootstrap resamples), and
    write metrics.json, curves and the grid."""
    test_split = data.split("test")
    if len(test_split) == 0:
        raise AnodiffError("the dataset has no test split (splits.csv: case,split)")
    healthy_val = data.split("val").healthy()
    if len(healthy_val) == 0:
        raise AnodiffError("the dataset has no healthy validation slices, so no threshold at "
                           "a healthy false-positive rate can be calibrated; give it a val "
                           "split with healthy cases (splits.csv: case,val)")
    if resamples < 0:
        raise AnodiffError(f"resamples must be >= 0, got {resamples}")
    out.mkdir(parents=True, exist_ok=True)  # its callers checked and probed the location
    test = predict(detector, test_split, batch_size)
    validation = predict(detector, healthy_val, batch_size)
    metrics = evaluate_predictions(test, validation, postprocess, fpr, resamples)
    metrics["method"], metrics["sequences"] = detector.name, list(data.sequences)
    write_text_atomic(out / "metrics.json", json.dumps(json_ready(metrics), indent=2))
    fg = test.foreground
    anomalous = test.truth.reshape(len(test.truth), -1).any(1)
    curves({detector.name: (test.labels, test.scores)}, out / "curves_image.png",
           f"{title}: image level")
    curves({detector.name: (test.truth[anomalous][fg[anomalous]],
                            test.maps[anomalous][fg[anomalous]])},
           out / "curves_pixel.png", f"{title}: pixel level (anomalous slices)")
    rows = grid_rows(test)
    masks = test.masks if test.masks is not None else per_image_otsu(test.maps, fg)
    qualitative_grid(test.images[rows], test.truth[rows], test.maps[rows], masks[rows],
                     None if test.pseudo_healthy is None else test.pseudo_healthy[rows],
                     out / "grid.png", title, channel_names=list(data.sequences) or None)
    return metrics, test


def evaluate_run(run: Path, data_root: Path, out: Path, *, fpr: float = 0.01,
                 batch_size: int = 32, device: str = "auto",
                 resamples: int = DEFAULT_RESAMPLES, layout: str = "auto",
                 sequence_map: dict[str, str] | None = None) -> dict[str, Any]:
    """``anodiff evaluate RUN --data DIR --out DIR`` on ``device``.

    The dataset is read with the run's data options, its sequences picked by name from
    whatever the folder holds; ``layout`` (default: detected) and ``sequence_map`` (over the
    run's own) say how to read this folder, which need not be laid out like the training
    data."""
    if not 0 < fpr < 1:
        raise AnodiffError(f"--fpr: the healthy false-positive rate must be in (0, 1), got {fpr}")
    detector, spec = load_run(run, device)
    out = prepare_output_folder(Path(out), [Path(data_root)])  # RUN/eval is fine: ours
    with run_log(out, "evaluate"):
        names = {**(spec.data.sequence_map or {}), **(sequence_map or {})}
        data = replace(spec.data, layout=layout, sequence_map=names or None).open(data_root)
        for case, problem in data.skipped:
            log.warning("skipped case %s: %s", case, problem)
        metrics, _ = evaluate_detector(detector, data, out, title=f"{spec.method} on "
                                       f"{Path(data_root).name}", fpr=fpr,
                                       batch_size=batch_size, resamples=resamples)
        log.info("metrics written to %s", out / "metrics.json")
    return metrics
