"""One table of every supervision regime on one track: what each extra label buys.

Reads ``results.csv`` tables of ``anodiff benchmark`` (committed under
``benchmarks/results/``), keeps the rows of one dataset and sequence set, and prints them
sorted by regime (unsupervised, self, weak, semi, supervised) with the labels each method
learned from, the deployable figures (per-case Dice at the healthy-FPR threshold and at the
method's own mask) and the threshold-free ones; ``--csv`` writes the same rows.

Run (from the repository root)::

    .venv/bin/python benchmarks/regimes_table.py --dataset tumour \\
        benchmarks/results/protocol_v2_tumour.csv benchmarks/results/issue18_tumour_shift.csv \\
        benchmarks/results/issue21_unet.csv benchmarks/results/issue21_part2_tumour.csv \\
        benchmarks/results/issue21_label_efficiency_tumour.csv \\
        --exclude threshold-dark threshold-flair threshold-flair-dark \\
        --csv benchmarks/results/issue21_regimes_tumour.csv

A method appears once per track: the first table that has it wins. Several ``--dataset``
values print a table per track and write all of them to one CSV. The method of a row is the
longest catalogue name its label starts with (``unet-k20`` is ``unet`` on 20 labelled
slices, ``threshold-flair`` is ``threshold``).
"""

from __future__ import annotations

import argparse
import csv
import math
import re
from pathlib import Path

from anodiff.catalogue import BUILT_IN

ORDER = ("unsupervised", "self", "weak", "semi", "supervised")
USES = {"unsupervised": "healthy train slices", "self": "healthy train slices",
        "weak": "image labels of every train slice",
        "semi": "every train slice, masks of {k}", "supervised": "masks of {k}"}
COLUMNS = ("regime", "method", "labels", "volume_dice_fpr", "volume_dice_own", "pixel_ap",
           "pixel_ap_ci_low", "pixel_ap_ci_high", "image_auroc", "detection_rate_small_fpr",
           "healthy_fp_area_fpr")


def method_of(label: str) -> tuple[str, str]:
    """(catalogue method, supervision) of a results label."""
    names = sorted((name for name, _, _ in BUILT_IN if label.startswith(name)), key=len)
    if not names:
        raise SystemExit(f"{label}: no method of the catalogue is named like it")
    return names[-1], {n: s for n, s, _ in BUILT_IN}[names[-1]]


def labels_used(label: str, regime: str) -> str:
    """What a method of ``regime`` learned from; ``-k<N>`` in a label means N slices."""
    found = re.search(r"-k(\d+)$", label)
    slices = f"{found.group(1)} slices" if found else "every train slice"
    return USES[regime].format(k=slices)


def number(value: str) -> str:
    """A CSV cell to three places (missing or NaN as an en dash)."""
    try:
        figure = float(value)
    except (TypeError, ValueError):
        return "–"
    return "–" if math.isnan(figure) else f"{figure:.3f}"


def regime_rows(tables: list[Path], dataset: str, sequences: str, exclude: list[str]
                ) -> list[dict[str, str]]:
    """The rows of one dataset and sequence set, a method once (the first table that has it
    wins), sorted by regime, with the regime and the labels it learned from added."""
    rows: dict[str, dict[str, str]] = {}
    for table in tables:
        with table.open(newline="", encoding="utf-8") as handle:
            for row in csv.DictReader(handle):
                left_out = row["method"] in exclude or f"{dataset}:{row['method']}" in exclude
                if row["dataset"] == dataset and not left_out and \
                        row.get("sequences", sequences) == sequences:
                    rows.setdefault(row["method"], row)
    out = []
    for label, row in rows.items():
        _, regime = method_of(label)
        out.append({**row, "dataset": dataset, "sequences": sequences, "regime": regime,
                    "method": label, "labels": labels_used(label, regime)})
    out.sort(key=lambda r: (ORDER.index(r["regime"]), r["method"]))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tables", nargs="+", type=Path, help="results.csv files")
    parser.add_argument("--dataset", required=True, nargs="+",
                        help="one or more tracks: a table per track")
    parser.add_argument("--sequences", default="flair+t1+t2")
    parser.add_argument("--csv", type=Path, help="also write the rows here")
    parser.add_argument("--exclude", nargs="*", default=[],
                        help="method labels to leave out (duplicates, a failed polarity); "
                        "DATASET:LABEL leaves it out of one track only")
    args = parser.parse_args()
    every = []
    for dataset in args.dataset:
        out = regime_rows(args.tables, dataset, args.sequences, args.exclude)
        if len(args.dataset) > 1:
            print(f"\n**{dataset}**\n")
        print("| " + " | ".join(COLUMNS) + " |")
        print("|" + "---|" * len(COLUMNS))
        for row in out:
            cells = [row[c] if c in ("regime", "method", "labels") else number(row.get(c, ""))
                     for c in COLUMNS]
            print("| " + " | ".join(cells) + " |")
        every += out
    if args.csv:
        with args.csv.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=["dataset", "sequences", *COLUMNS],
                                    extrasaction="ignore")
            writer.writeheader()
            writer.writerows(every)


if __name__ == "__main__":
    main()
