"""``anodiff evaluate``: a run's detector on a dataset's test split -> metrics.json, figures
and report.html.

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

from anodiff.config import to_plain
from anodiff.data import SliceDataset
from anodiff.errors import AnodiffError
from anodiff.evaluation.bootstrap import DEFAULT_RESAMPLES
from anodiff.evaluation.runner import Predictions, evaluate_predictions, predict
from anodiff.extras import installed
from anodiff.methods import Detector
from anodiff.outputs import prepare_output_folder, write_text_atomic
from anodiff.report.figures import (
    curves,
    detection_by_size,
    dice_against_threshold,
    dice_distribution,
    qualitative_grid,
)
from anodiff.report.html import write_report
from anodiff.report.tables import RESULT_COLUMNS
from anodiff.scoring.postprocess import PostProcess
from anodiff.scoring.thresholds import otsu_threshold, per_image_otsu
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
) -> tuple[dict[str, Any], Predictions, list[tuple[str, Path]]]:
    """Localise the test split, evaluate (with ``resamples`` case-bootstrap resamples), and
    write metrics.json and the figures of :func:`method_figures`; return the metrics, the
    predictions and the (caption, figure) pairs."""
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
    metrics["method"], metrics["sequences"] = detector.name, list(data.centre_sequences)
    write_text_atomic(out / "metrics.json", json.dumps(json_ready(metrics), indent=2))
    if not installed("report"):
        log.warning("%s: no figures (they need matplotlib: pip install 'anodiff[report]'); "
                    "metrics.json and the tables are complete", out)
        return metrics, test, []
    figures = method_figures(test, metrics, out, title, postprocess,
                             list(data.centre_sequences) or None)
    return metrics, test, figures


def method_figures(test: Predictions, metrics: dict[str, Any], out: Path, title: str,
                   postprocess: PostProcess | None = None,
                   channel_names: list[str] | None = None) -> list[tuple[str, Path]]:
    """One method's figures into ``out``: examples (with case and slice), Dice against the
    threshold with the FPR / Otsu / best points, the per-case Dice and detection by lesion
    size at the FPR threshold (for volumes), and image- and pixel-level curves."""
    name = str(metrics["method"])
    fg = test.foreground
    anomalous = test.truth.reshape(len(test.truth), -1).any(1)
    rows = grid_rows(test)
    masks = test.masks if test.masks is not None else per_image_otsu(test.maps, fg)
    labels = [f"{test.cases[r]}, slice {test.slices[r]}" if test.cases[r] else f"slice {r}"
              for r in rows] if test.slices else None
    figures = [(f"{title}: examples, largest lesions first (case, slice; cyan: the method's "
                "Otsu mask, green: ground truth)", qualitative_grid(
                    test.images[rows], test.truth[rows], test.maps[rows], masks[rows],
                    None if test.pseudo_healthy is None else test.pseudo_healthy[rows],
                    out / "grid.png", title, channel_names=channel_names,
                    row_labels=labels))]
    if anomalous.any():
        maps = (postprocess or PostProcess()).maps(test.maps, fg, test.cases)
        otsu = [otsu_threshold(m, f) for m, f in zip(maps[anomalous], fg[anomalous],
                                                      strict=True) if f.any()]
        marks = {f"healthy FPR {metrics['calibration']['pixel_fpr_target']:.0%}":
                 metrics["pixel_threshold"],
                 "Otsu (median of the slices')": float(np.median(otsu)) if otsu else math.nan,
                 "best (chosen with test labels)": metrics["dice_max_threshold"]}
        figures.append((f"{title}: Dice against the threshold", dice_against_threshold(
            test.truth[anomalous][fg[anomalous]], maps[anomalous][fg[anomalous]], marks,
            out / "dice_threshold.png", f"{title}: Dice against the threshold")))
    if metrics.get("case_dice_fpr"):
        figures.append((f"{title}: Dice per case at the FPR threshold", dice_distribution(
            {name: list(metrics["case_dice_fpr"].values())}, out / "dice_cases.png",
            title)))
    if any(metrics.get(f"n_lesions_{size}") for size in ("small", "medium", "large")):
        figures.append((f"{title}: lesions found by size at the FPR threshold",
                        detection_by_size([metrics], out / "detection_by_size.png", title,
                                          tuple(metrics["size_bins_ml"]))))
    figures.append((f"{title}: image-level curves", curves(
        {name: (test.labels, test.scores)}, out / "curves_image.png", f"{title}: image level")))
    figures.append((f"{title}: pixel-level curves (anomalous slices)", curves(
        {name: (test.truth[anomalous][fg[anomalous]], test.maps[anomalous][fg[anomalous]])},
        out / "curves_pixel.png", f"{title}: pixel level (anomalous slices)")))
    return figures


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
        title = f"{spec.method} on {Path(data_root).name}"
        metrics, _, figures = evaluate_detector(detector, data, out, title=title, fpr=fpr,
                                                batch_size=batch_size, resamples=resamples)
        write_report(out / "report.html", title,
                     [{**metrics, "dataset": Path(data_root).name,
                       "sequences": "+".join(metrics["sequences"]) or "image"}],
                     RESULT_COLUMNS, figures,
                     settings={"run": str(run), "data": str(data_root), "fpr": fpr,
                               "resamples": resamples, "run settings": to_plain(spec)},
                     notes=[f"*_fpr figures threshold at the value reached by {fpr:.0%} of "
                            "healthy validation brain pixels (the deployable operating "
                            "point); intervals: 95 % case bootstrap."])
        log.info("metrics written to %s, report to %s", out / "metrics.json",
                 out / "report.html")
    return metrics
