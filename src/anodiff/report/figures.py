"""Figures: ROC and precision-recall curves, the qualitative grid of a method, and the
operating-point plots of the protocol (per-case Dice, detection by lesion size, Dice
against the threshold).

matplotlib (the optional ``anodiff[report]``; imported on the first figure) with the
non-interactive Agg backend (no display needed); every function writes
one PNG and returns its path.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import precision_recall_curve, roc_curve

from anodiff.evaluation.metrics import Overlap
from anodiff.extras import require
from anodiff.outputs import replaced_atomically


@cache
def _pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend (chosen before pyplot is imported)."""
    require("matplotlib", "report", "figures").use("Agg")
    return importlib.import_module("matplotlib.pyplot")


def _figure(*args: Any, **kwargs: Any) -> Any:
    """``plt.subplots``: a new figure and its axes."""
    return _pyplot().subplots(*args, **kwargs)


def curves(
    labels_and_scores: Mapping[str, tuple[np.ndarray, np.ndarray]],
    path: Path,
    title: str,
) -> Path:
    """ROC (left) and precision-recall (right) curves of several methods on one dataset.

    ``labels_and_scores`` maps a method name to (binary labels, scores); pixel-level curves
    pass pooled pixels, which are subsampled to at most 200,000 points for speed.
    """
    fig, (roc_ax, pr_ax) = _figure(1, 2, figsize=(9, 4), dpi=100)
    rng = np.random.default_rng(0)
    for name, (labels, scores) in labels_and_scores.items():
        labels, scores = np.asarray(labels).ravel().astype(bool), np.asarray(scores).ravel()
        if labels.size > 200_000:
            keep = rng.choice(labels.size, 200_000, replace=False)
            labels, scores = labels[keep], scores[keep]
        if 0 < labels.sum() < labels.size:
            fpr, tpr, _ = roc_curve(labels, scores)
            precision, recall, _ = precision_recall_curve(labels, scores)
            roc_ax.plot(fpr, tpr, label=name)
            pr_ax.plot(recall, precision, label=name)
    roc_ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    roc_ax.set(xlabel="false-positive rate", ylabel="true-positive rate", title="ROC")
    pr_ax.set(xlabel="recall", ylabel="precision", title="precision-recall", ylim=(0, 1.02))
    roc_ax.legend(fontsize=8, loc="lower right")
    fig.suptitle(title)
    fig.tight_layout()
    _save(fig, Path(path))
    return path


def qualitative_grid(
    images: np.ndarray,
    truth: np.ndarray,
    maps: np.ndarray,
    masks: np.ndarray | None,
    pseudo_healthy: np.ndarray | None,
    path: Path,
    title: str,
    channel_names: Sequence[str] | None = None,
    row_labels: Sequence[str] | None = None,
) -> Path:
    """One row per example: input, pseudo-healthy, anomaly map, mask, ground truth.

    ``images`` and ``pseudo_healthy`` are (N, C, H, W) in [0, 1]; the FLAIR channel is shown
    when ``channel_names`` has one (lesions are most visible there), else the last; ``maps``
    (N, H, W) are shown on one shared colour scale, drawn as a colour bar, so rows can be
    compared; masks are outlined on the input; ``row_labels`` (e.g. case and slice) head
    each row.
    """
    columns = ["input", "pseudo-healthy", "anomaly map", "mask", "ground truth"]
    if pseudo_healthy is None:
        columns.remove("pseudo-healthy")
    if masks is None:
        columns.remove("mask")
    n = len(images)
    fig, axes = _figure(n, len(columns), figsize=(2 * len(columns) + 0.6, 2 * n + 0.4),
                        dpi=90, squeeze=False, layout="constrained")
    names = list(channel_names or [])
    channel = names.index("flair") if "flair" in names else images.shape[1] - 1
    shown = names[channel] if names else f"channel {channel}"
    vmax = float(np.percentile(maps, 99.5)) or 1.0
    for row in range(n):
        picture = images[row, channel]
        panels = {
            "input": (picture, "gray", 0, 1),
            "pseudo-healthy": (None if pseudo_healthy is None else pseudo_healthy[row, channel],
                               "gray", 0, 1),
            "anomaly map": (maps[row], "inferno", 0, vmax),
            "mask": (picture, "gray", 0, 1),
            "ground truth": (picture, "gray", 0, 1),
        }
        for col, name in enumerate(columns):
            ax = axes[row, col]
            data, cmap, low, high = panels[name]
            ax.imshow(data, cmap=cmap, vmin=low, vmax=high, interpolation="nearest")
            if name == "mask" and masks is not None and masks[row].any():
                ax.contour(masks[row], levels=[0.5], colors="cyan", linewidths=0.8)
            if name == "ground truth" and truth[row].any():
                ax.contour(truth[row], levels=[0.5], colors="lime", linewidths=0.8)
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(name, fontsize=9)
        if row_labels is not None:
            axes[row, 0].set_ylabel(row_labels[row], fontsize=7)
    fig.suptitle(f"{title} ({shown})", fontsize=10)
    map_column = columns.index("anomaly map")
    bar = fig.colorbar(axes[0, map_column].images[0], ax=list(axes[:, map_column]),
                       fraction=0.05, pad=0.02)
    bar.set_label("anomaly map", fontsize=8)
    bar.ax.tick_params(labelsize=7)
    _save(fig, Path(path))
    return path


def dice_distribution(case_dice: Mapping[str, Sequence[float]], path: Path, title: str
                      ) -> Path:
    """Per-case Dice at the healthy-FPR threshold of each method: a box (quartiles, median)
    with every case drawn as a dot, so a mean carried by a few cases shows."""
    names = list(case_dice)
    fig, ax = _figure(figsize=(max(4.0, 1.2 * len(names) + 2), 3.6), dpi=100)
    values = [np.asarray([v for v in case_dice[n] if np.isfinite(v)]) for n in names]
    ax.boxplot(values, showfliers=False, widths=0.5)
    rng = np.random.default_rng(0)
    for i, found in enumerate(values, start=1):
        ax.scatter(i + rng.uniform(-0.15, 0.15, len(found)), found, s=8, alpha=0.6,
                   color="tab:blue")
    ax.set_xticks(range(1, len(names) + 1), names, rotation=20, ha="right", fontsize=8)
    ax.set(ylabel="Dice per case at the FPR threshold", ylim=(-0.02, 1.02), title=title)
    fig.tight_layout()
    _save(fig, Path(path))
    return path


def detection_by_size(rows: Sequence[Mapping[str, Any]], path: Path, title: str,
                      bins_ml: tuple[float, float]) -> Path:
    """Share of lesions found at the healthy-FPR threshold per lesion-volume stratum, one
    bar per method (``rows``: metrics with ``method``, ``detection_rate_<bin>_fpr`` and
    ``n_lesions_<bin>``)."""
    strata = ("small", "medium", "large")
    small, large = bins_ml
    n = [int(rows[0].get(f"n_lesions_{s}", 0)) if rows else 0 for s in strata]
    names = [f"< {small:g} ml\n(n = {n[0]})", f"{small:g}-{large:g} ml\n(n = {n[1]})",
             f"≥ {large:g} ml\n(n = {n[2]})"]
    fig, ax = _figure(figsize=(6, 3.6), dpi=100)
    width = 0.8 / max(len(rows), 1)
    for i, row in enumerate(rows):
        rates = [float(row.get(f"detection_rate_{s}_fpr", np.nan)) for s in strata]
        ax.bar(np.arange(3) + (i - (len(rows) - 1) / 2) * width, np.nan_to_num(rates),
               width, label=str(row.get("method", i)))
    ax.set_xticks(range(3), names, fontsize=8)
    ax.set(ylabel="lesions found", ylim=(0, 1.05), title=title)
    ax.legend(fontsize=7)
    fig.tight_layout()
    _save(fig, Path(path))
    return path


def dice_against_threshold(truth: np.ndarray, scores: np.ndarray, marks: Mapping[str, float],
                           path: Path, title: str) -> Path:
    """Pooled Dice of ``scores >= t`` against ``truth`` over every threshold ``t``, with the
    operating points in ``marks`` (name -> threshold) drawn on the curve: how much the
    deployable threshold gives away against the best one chosen with test labels. Over
    500,000 pixels, a fixed random half-million stands for them (curve and points alike)."""
    truth, scores = np.asarray(truth).ravel().astype(bool), np.asarray(scores).ravel()
    if truth.size > 500_000:
        keep = np.random.default_rng(0).choice(truth.size, 500_000, replace=False)
        truth, scores = truth[keep], scores[keep]
    fig, ax = _figure(figsize=(5.5, 3.6), dpi=100)
    if truth.any():
        precision, recall, thresholds = precision_recall_curve(truth, scores)
        with np.errstate(invalid="ignore", divide="ignore"):
            dice = np.nan_to_num(2 * precision * recall / (precision + recall))[:-1]
        ax.plot(thresholds, dice, color="black", linewidth=1)
        for (name, threshold), colour in zip(marks.items(), ("tab:red", "tab:blue",
                                                            "tab:green", "tab:orange"),
                                             strict=False):
            if np.isfinite(threshold):
                value = Overlap.of(scores >= threshold, truth).dice
                ax.scatter([threshold], [value], color=colour, zorder=3,
                           label=f"{name}: {value:.3f}")
        ax.legend(fontsize=8)
    ax.set(xlabel="threshold on the anomaly map", ylabel="Dice (pooled pixels)",
           ylim=(0, 1.02), title=title)
    fig.tight_layout()
    _save(fig, Path(path))
    return path


def _save(fig: Any, path: Path) -> None:
    """Write the figure atomically (:func:`anodiff.outputs.replaced_atomically`) and close it."""
    try:
        with replaced_atomically(path) as tmp:
            fig.savefig(tmp)
    finally:
        _pyplot().close(fig)
