"""One self-contained HTML report: tables, figures embedded as data URIs, and a glossary.

Self-contained so it can be e-mailed or archived with a study: no external files, scripts
or fonts. Written with the standard library's ``html.escape``; no template engine needed.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from anodiff.outputs import write_text_atomic
from anodiff.report.tables import full_cells, full_headers, headline

GLOSSARY = {
    "image_auroc": "How well the image score ranks anomalous slices above healthy ones "
                   "(0.5 = chance, 1 = perfect).",
    "image_ap": "Average precision of the image score; its chance level is the share of "
                "anomalous slices.",
    "image_auroc_foreground_area": "Image AUROC of a trivial score, how much of the slice is "
                                   "brain: the reference image_auroc must beat (lesions "
                                   "often sit only in large central slices).",
    "pixel_auroc": "Ranking quality of the anomaly map's pixels inside the brain of the "
                   "anomalous slices, pooled over slices.",
    "pixel_ap": "Average precision of the pooled pixels; chance level is the lesion's share "
                "of brain pixels. The most telling single number for small lesions.",
    "dice_max": "Best achievable overlap (Dice) over all thresholds, chosen with the test "
                "labels: an upper bound, not a deployable result.",
    "dice_otsu": "Overlap (Dice) of the method's own mask (Otsu's threshold per image) with "
                 "the ground truth, averaged over anomalous slices.",
    "precision_otsu": "Share of flagged pixels that are truly lesion.",
    "hd95_otsu": "95th-percentile distance (mm; pixels for images without a voxel size) "
                 "between flagged and true lesion borders per slice; lower is better.",
    "hd95_fpr": "The same distance for the masks at the healthy-FPR threshold.",
    "vs_otsu": "Volumetric similarity: 1 when the flagged area has the lesion's size.",
    "healthy_residual": "Mean difference between a healthy input and its pseudo-healthy "
                        "reconstruction: how much a method alters normal anatomy.",
    "healthy_fp_area": "Share of brain flagged on healthy slices (false alarms) by the "
                       "per-image Otsu masks.",
    "dice_fpr": "Overlap (Dice) per anomalous slice at the deployable threshold: the map "
                "value that the stated share of healthy validation brain pixels reaches "
                "(fixed without any lesion label).",
    "volume_dice_fpr": "Dice per 3-D case at that threshold, averaged over the cases with a "
                       "lesion; _ci_low / _ci_high: its 95 % interval by resampling cases.",
    "lesion_f1_fpr": "Lesion-wise F1 at that threshold: a lesion (3-D component) is found "
                     "when a flagged voxel touches it; a flagged component touching none is "
                     "a false positive.",
    "healthy_fp_area_fpr": "Share of the healthy slices' brain flagged at that threshold: "
                           "close to the stated false-positive rate when the calibration "
                           "transfers to the test cases.",
    "detection_rate_small_fpr": "Share of lesions under 1 ml found at that threshold "
                                "(medium: 1-10 ml, large: 10 ml and more).",
    "pixel_ap_ci_low": "Lower end of the 95 % case-bootstrap interval of pixel_ap "
                       "(_ci_high: upper end).",
    "pixel_ap_p": "Paired bootstrap over cases: the share of resamples in which the method "
                  "does not beat the reference (a one-sided p-value; below 0.05: it beats "
                  "it).",
    "seconds_per_image": "Wall-clock time to process one slice on the machine stated.",
    "nfe_per_image": "Network evaluations spent per slice (the cost driver of diffusion).",
}


def _table(headers: Sequence[str], cells: Sequence[Sequence[str]],
           keys: Sequence[str] | None = None) -> str:
    """An HTML table; ``keys`` (the metric names) become each header's tooltip."""
    tips = keys or [""] * len(headers)
    head = "".join(f'<th title="{html.escape(k)}">{html.escape(h)}</th>' if k
                   else f"<th>{html.escape(h)}</th>" for h, k in zip(headers, tips, strict=True))
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
                   for row in cells)
    return f"<table><tr>{head}</tr>{body}</table>"


def _raw_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    return _table(full_headers(columns, rows), full_cells(rows, columns))


def _image_tag(path: Path) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(Path(path).stem)}" src="data:image/png;base64,{data}">'


def settings_yaml(settings: Mapping[str, Any]) -> str:
    """Settings as YAML, the format of the configuration files they come from."""
    plain = json.loads(json.dumps(settings, default=str, allow_nan=True))
    return yaml.safe_dump(plain, sort_keys=False, default_flow_style=False, width=100)


def write_report(
    path: Path,
    title: str,
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[str],
    figures: Sequence[tuple[str, Path]],
    settings: Mapping[str, Any],
    notes: Sequence[str] = (),
    tables: Sequence[tuple[str, Sequence[Mapping[str, Any]], Sequence[str]]] = (),
) -> Path:
    """Write the report to ``path`` (atomically) and return it.

    The results appear twice: the headline columns with units and 95 % intervals
    (:mod:`anodiff.report.tables`), then every one of ``columns`` under its results.csv name
    in a folded table. ``tables`` are further (title, rows, columns) tables shown after the
    results.
    """
    keys, headers, cells = headline(rows)
    extra = "".join(f"<h2>{html.escape(name)}</h2>{_raw_table(table_rows, table_columns)}"
                    for name, table_rows, table_columns in tables if table_rows)
    shown = set(columns) | set(keys) | {c for _, _, cs in tables for c in cs}
    glossary = "".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>"
                       for k, v in GLOSSARY.items() if k in shown)
    figs = "".join(f"<figure>{_image_tag(p)}<figcaption>{html.escape(caption)}</figcaption>"
                   f"</figure>" for caption, p in figures) or \
        "<p>No figures: they need matplotlib (pip install 'anodiff[report]').</p>"
    note_items = "".join(f"<li>{html.escape(n)}</li>" for n in notes)
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; max-width: 1400px; color: #222; }}
table {{ border-collapse: collapse; font-size: 0.9em; }}
th, td {{ border: 1px solid #ccc; padding: 4px 8px; text-align: right; }}
th {{ background: #f0f0f0; }} td:nth-child(-n+3) {{ text-align: left; }}
.scroll {{ overflow-x: auto; }} summary {{ cursor: pointer; margin: 1em 0; }}
figure {{ margin: 1.5em 0; }} img {{ max-width: 100%; }}
dt {{ font-weight: bold; margin-top: 0.5em; }} pre {{ background: #f6f6f6; padding: 1em; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
<h2>Results</h2>{_table(headers, cells, keys)}
<ul>{note_items}</ul>
<details><summary>All {len(columns)} columns, named as in results.csv</summary>
<div class="scroll">{_raw_table(rows, columns)}</div></details>{extra}
<h2>What the numbers mean</h2><dl>{glossary}</dl>
<h2>Figures</h2>{figs}
<h2>Settings</h2><pre>{html.escape(settings_yaml(settings))}</pre>
</body></html>
"""
    write_text_atomic(Path(path), page)
    return Path(path)
