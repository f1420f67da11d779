"""The results table as people read it: headline columns first, with units and intervals.

``results.csv`` keeps one raw column per metric for scripts; the report and ``results.md``
show the deployable operating point and the threshold-free figures first, under readable
titles with their units (HD95 in mm, time in s, flagged brain in %), a 95 % interval beside
each figure the protocol bootstraps, and every other column in a second, folded table.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Column:
    """One headline column: the metric's key, its title and unit, how it is printed."""

    key: str
    title: str
    unit: str = ""
    scale: float = 1.0
    digits: int = 3
    interval: bool = False  # the row has <key>_ci_low and <key>_ci_high

    def header(self, hd95_unit: str = "mm") -> str:
        unit = hd95_unit if self.key.startswith("hd95") else self.unit
        return f"{self.title} ({unit})" if unit else self.title

    def cell(self, row: Mapping[str, Any]) -> str:
        value = row.get(self.key, math.nan)
        if not isinstance(value, float | int) or isinstance(value, bool):
            return str(value)
        text = number(value * self.scale, self.digits)
        low, high = row.get(f"{self.key}_ci_low"), row.get(f"{self.key}_ci_high")
        if self.interval and _finite(low) and _finite(high) and _finite(value):
            text += (f" ({number(low * self.scale, self.digits)}–"
                     f"{number(high * self.scale, self.digits)})")
        return text


# The deployable operating point (threshold fixed on healthy validation data) first, then the
# threshold-free figures, the slice-size reference image AUROC must beat, and the cost.
HEADLINE = (
    Column("dataset", "Dataset"),
    Column("sequences", "Sequences"),
    Column("method", "Method"),
    Column("volume_dice_fpr", "Dice per case at the FPR threshold", interval=True),
    Column("lesion_f1_fpr", "Lesion F1 at the FPR threshold"),
    Column("healthy_fp_area_fpr", "Healthy brain flagged", unit="%", scale=100.0, digits=2),
    Column("pixel_ap", "Pixel AP", interval=True),
    Column("image_auroc", "Image AUROC", interval=True),
    Column("image_auroc_foreground_area", "Slice-size AUROC (reference)"),
    Column("hd95_fpr", "HD95 at the FPR threshold"),
    Column("seconds_per_image", "Time per slice", unit="s", digits=2),
)

# Every column of results.csv: the operating point first, then the threshold-free figures with
# their intervals, then the rest.
RESULT_COLUMNS = (
    "dataset", "sequences", "method", "dice_fpr", "volume_dice_fpr", "volume_dice_fpr_ci_low",
    "volume_dice_fpr_ci_high", "lesion_f1_fpr", "detection_rate_small_fpr",
    "detection_rate_medium_fpr", "detection_rate_large_fpr", "healthy_fp_area_fpr",
    "case_auroc_fpr", "pixel_ap", "pixel_ap_ci_low", "pixel_ap_ci_high", "image_auroc",
    "image_auroc_ci_low", "image_auroc_ci_high", "image_auroc_foreground_area", "image_ap",
    "pixel_auroc", "dice_max", "volume_dice_own", "lesion_f1_own", "detection_rate_small_own",
    "uncertainty_auroc_own", "uncertainty_auroc_fpr", "dice_otsu", "precision_otsu",
    "hd95_otsu", "vs_otsu", "lesion_detection_rate", "healthy_fp_area", "healthy_residual",
    "seconds_per_image", "nfe_per_image", "train_seconds", "n_images")

_UNITS = {"seconds_per_image": "s", "train_seconds": "s"}


def number(value: float, digits: int = 3) -> str:
    """``value`` to ``digits`` places; NaN (not measured) as an en dash."""
    return "–" if math.isnan(value) else f"{value:.{digits}f}"


def _finite(value: Any) -> bool:
    return isinstance(value, float | int) and math.isfinite(value)


def hd95_unit(rows: Sequence[Mapping[str, Any]]) -> str:
    """"mm" when every row measured HD95 in mm, else "pixels" (images without a voxel
    size are measured on the pixel grid)."""
    return "mm" if rows and all(row.get("hd95_unit", "mm") == "mm" for row in rows) \
        else "pixels"


def headline(rows: Sequence[Mapping[str, Any]]
             ) -> tuple[list[str], list[str], list[list[str]]]:
    """Keys, headers and cells of the headline table, omitting a column no row has."""
    shown = [c for c in HEADLINE if any(c.key in row for row in rows)]
    unit = hd95_unit(rows)
    return ([c.key for c in shown], [c.header(unit) for c in shown],
            [[c.cell(row) for c in shown] for row in rows])


def full_headers(columns: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """The raw column names (as in results.csv) with their unit where they have one."""
    unit = hd95_unit(rows)
    return [f"{c} ({unit})" if c.startswith("hd95") else
            f"{c} ({_UNITS[c]})" if c in _UNITS else c for c in columns]


def full_cells(rows: Sequence[Mapping[str, Any]], columns: Sequence[str], digits: int = 3
               ) -> list[list[str]]:
    """Every column of every row; floats to ``digits`` places, NaN and missing as –."""
    return [[number(v, digits) if isinstance(v := row.get(c, math.nan), float) else str(v)
             for c in columns] for row in rows]


def _markdown(headers: Sequence[str], cells: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(row) + " |" for row in cells]
    return "\n".join(lines) + "\n"


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str], digits: int = 3,
                   headers: Sequence[str] | None = None) -> str:
    """Rows as a markdown table of ``columns`` (titled ``headers``, default the names)."""
    return _markdown(headers or columns, full_cells(rows, columns, digits))


def results_markdown(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """``results.md``: the headline table, then every column folded in a ``<details>``
    block (GitHub and most markdown viewers render it collapsed)."""
    _, headers, cells = headline(rows)
    return (_markdown(headers, cells) + "\nIntervals: 95 % case bootstrap. FPR threshold: "
            "fixed on healthy validation brain pixels only.\n\n<details><summary>All columns "
            "(as in results.csv)</summary>\n\n"
            + markdown_table(rows, columns, headers=full_headers(columns, rows))
            + "\n</details>\n")
