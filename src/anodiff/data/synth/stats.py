"""Statistics that say how hard each track is: lesion sizes, slice shares, contrasts.

Per case (:func:`case_stats`) and per track (:func:`track_stats`), written to each track's
``stats.json`` and summarised by :func:`stats_table` in the dataset's README. Contrasts are
relative, ``mean(lesion) / mean(reference) - 1``, measured on the acquired images against

- ``surround``: parenchyma (grey + white matter >= 50 %) within 2 voxels of the lesion,
  what an observer compares the lesion with;
- ``twin``: the same voxels in the case rendered without its lesion, the exact change.

``percentile`` is the share of the case's healthy brain voxels darker than the lesion's
median: near 0 or 1 the lesion is darker or brighter than (almost) all tissue, so a global
intensity threshold finds it; in between, thresholding must also cut healthy tissue.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage as ndi

from anodiff.data.synth.case import Case
from anodiff.data.synth.contrasts import SEQUENCES

MEASURES = ("surround", "twin", "percentile")
SPLITS = ("train", "val", "test")


def case_stats(case: Case) -> dict[str, Any]:
    """Sizes, slice counts and (for lesion cases) contrasts of one case."""
    lesion = case.seg > 0
    brain = case.foreground
    row: dict[str, Any] = {
        "case": case.name,
        "brain_voxels": int(brain.sum()),
        "lesion_voxels": int(lesion.sum()),
        "brain_slices": int(brain.any(axis=(0, 1)).sum()),
        "lesion_slices": int(lesion.any(axis=(0, 1)).sum()),
        "labels": {str(k): int(n) for k, n in zip(*np.unique(case.seg[lesion],
                                                              return_counts=True), strict=True)},
    }
    if not lesion.any():
        return row
    ring = ndi.binary_dilation(lesion, iterations=2) & ~lesion & case.parenchyma
    healthy = brain & ~lesion
    for measure in MEASURES:
        row[measure] = {}
    for seq in SEQUENCES:
        image = case.images[seq]
        inside = float(image[lesion].mean())
        around = float(image[ring].mean()) if ring.any() else None
        row["surround"][seq] = None if around is None else _round(inside / around - 1)
        row["twin"][seq] = _round(inside / float(case.twin[seq][lesion].mean()) - 1)
        row["percentile"][seq] = _round(float(np.mean(image[healthy] < np.median(image[lesion]))))
    return row


def track_stats(rows: list[dict[str, Any]], voxel_ml: float) -> dict[str, Any]:
    """Aggregate case rows (each with ``split`` and ``lesion`` added) into track statistics."""
    cases = {split: {"healthy": 0, "lesion": 0} for split in SPLITS}
    for row in rows:
        cases[row["split"]]["lesion" if row["lesion"] else "healthy"] += 1
    sick = [r for r in rows if r["lesion"]]
    train = [r for r in rows if r["split"] == "train"]
    test = [r for r in rows if r["split"] == "test"]
    labels = {}
    for row in sick:
        for label, n in row["labels"].items():
            labels[label] = labels.get(label, 0) + n
    lesion_total = sum(labels.values())
    out: dict[str, Any] = {
        "cases": cases,
        "shifted_scanner_cases": sum(1 for r in rows if r.get("scanner") == "shifted"),
        "train_slices_without_lesion": sum(r["brain_slices"] - r["lesion_slices"] for r in train),
        "train_slices_with_lesion": sum(r["lesion_slices"] for r in train),
        "anomalous_slice_share": {
            "lesion_cases": _share(sick),
            "test": _share(test),
        },
        "lesion_voxels": _summary([r["lesion_voxels"] for r in sick]),
        "lesion_ml": _summary([r["lesion_voxels"] * voxel_ml for r in sick]),
        "lesion_percent_of_brain": _summary([100 * r["lesion_voxels"] / r["brain_voxels"]
                                             for r in sick]),
        "label_share": {k: _round(n / lesion_total) for k, n in sorted(labels.items())},
    }
    for measure in MEASURES:
        out[measure] = {}
        for seq in SEQUENCES:
            values = [r[measure][seq] for r in sick if r[measure][seq] is not None]
            out[measure][seq] = {"mean": _round(float(np.mean(values))),
                                 "sd": _round(float(np.std(values))),
                                 "mean_abs": _round(float(np.mean(np.abs(values))))}
    return out


def stats_table(stats: dict[str, dict[str, Any]]) -> str:
    """A Markdown table of the headline statistics, one row per track."""
    head = ("| track | train slices without / with lesion | anomalous slices (lesion cases) "
            "| lesion ml, median (range) | % of brain, median "
            "| contrast vs surround T1 / T2 / FLAIR | \\|change\\| vs twin T1 / T2 / FLAIR "
            "| healthy voxels below lesion median T1 / T2 / FLAIR |")
    lines = [head, "|" + "---|" * 8]
    for track, s in stats.items():
        ml = s["lesion_ml"]
        lines.append(
            f"| {track} | {s['train_slices_without_lesion']} / {s['train_slices_with_lesion']} "
            f"| {100 * s['anomalous_slice_share']['lesion_cases']:.0f} % "
            f"| {ml['median']:.1f} ({ml['min']:.1f}-{ml['max']:.1f}) "
            f"| {s['lesion_percent_of_brain']['median']:.2f} "
            f"| {_triple(s['surround'], '{:+.2f}')} | {_triple(s['twin'], '{:.2f}', 'mean_abs')} "
            f"| {_triple(s['percentile'], '{:.2f}')} |")
    return "\n".join(lines) + "\n"


def _triple(measure: dict[str, dict[str, float]], fmt: str, key: str = "mean") -> str:
    """'+0.05 / -0.30 / +0.52': one statistic of a measure for every sequence."""
    return " / ".join(fmt.format(measure[seq][key]) for seq in SEQUENCES)


def _share(rows: list[dict[str, Any]]) -> float:
    """Share of brain-containing axial slices that contain lesion voxels."""
    brain = sum(r["brain_slices"] for r in rows)
    return _round(sum(r["lesion_slices"] for r in rows) / brain) if brain else 0.0


def _summary(values: list[float]) -> dict[str, float]:
    """min, quartiles, max and mean of ``values`` (rounded)."""
    if not values:
        return {}
    q = np.percentile(values, [0, 25, 50, 75, 100])
    keys = ("min", "p25", "median", "p75", "max")
    return {**{k: _round(float(v)) for k, v in zip(keys, q, strict=True)},
            "mean": _round(float(np.mean(values)))}


def _round(value: float) -> float:
    """Four decimals: stable across runs and readable in JSON."""
    return round(value, 4)
