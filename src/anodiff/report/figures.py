"""Figures: ROC and precision-recall curves, and the qualitative grid of a method.

matplotlib with the non-interactive Agg backend (no display needed); every function writes
one PNG and returns its path.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
import numpy as np  # noqa: E402
from sklearn.metrics import precision_recall_curve, roc_curve  # noqa: E402

from anodiff.outputs import replaced_atomically  # noqa: E402


def curves(
    labels_and_scores: Mapping[str, tuple[np.ndarray, np.ndarray]],
    path: Path,
    title: str,
) -> Path:
    """ROC (left) and precision-recall (right) curves of several methods on one dataset.

    ``labels_and_scores`` maps a method name to (binary labels, scores); pixel-level curves
    pass pooled pixels, which are subsampled to at most 200,000 points for speed.
    """
    fig, (roc_ax, pr_ax) = plt.subplots(1, 2, figsize=(9, 4), dpi=100)
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
) -> Path:
    """One row per example: input, pseudo-healthy, anomaly map, mask, ground truth.

    ``images`` and ``pseudo_healthy`` are (N, C, H, W) in [0, 1]; the FLAIR channel is shown
    when ``channel_names`` has one (lesions are most visible there), else the last; ``maps``
    (N, H, W) are shown on one shared colour scale so rows can be compared; masks are
    outlined on the input.
    """
    columns = ["input", "pseudo-healthy", "anomaly map", "mask", "ground truth"]
    if pseudo_healthy is None:
        columns.remove("pseudo-healthy")
    if masks is None:
        columns.remove("mask")
    n = len(images)
    fig, axes = plt.subplots(n, len(columns), figsize=(2 * len(columns), 2 * n + 0.4),
                             dpi=90, squeeze=False)
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
    fig.suptitle(f"{title} ({shown})", fontsize=10)
    fig.tight_layout()
    _save(fig, Path(path))
    return path


def _save(fig: Any, path: Path) -> None:
    """Write the figure atomically (:func:`anodiff.outputs.replaced_atomically`) and close it."""
    try:
        with replaced_atomically(path) as tmp:
            fig.savefig(tmp)
    finally:
        plt.close(fig)
