"""The label-efficiency curve of issue 21: pixel AP and per-case Dice against k labelled slices.

Reads a ``results.csv`` of ``anodiff benchmark`` whose method labels end in ``-k<N>`` (the
number of labelled train slices the method learned from, e.g. ``unet-k20``,
``ddpm-features-k20``), and draws one figure with two panels: pixel AP with its 95 %
case-bootstrap interval, and per-case Dice at the method's own mask, each against k on a
log axis, one line per method. ``--unlabelled`` adds the time the unlabelled pre-training
took to the title (it is the price of the semi-supervised method's curve).

Run (from the repository root)::

    .venv/bin/python benchmarks/label_efficiency.py \\
        benchmarks/results/issue21_label_efficiency_tumour.csv \\
        --out docs/figures/label_efficiency_tumour.png --title "tumour track"
"""

from __future__ import annotations

import argparse
import csv
import re
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend is chosen first)

LABEL = re.compile(r"^(?P<method>.+)-k(?P<k>\d+)$")


def curves(table: Path) -> dict[str, list[dict[str, float]]]:
    """method -> rows sorted by k (k, pixel AP and its interval, Dice at the own mask)."""
    out: dict[str, list[dict[str, float]]] = defaultdict(list)
    with table.open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            found = LABEL.match(row["method"])
            if found is None:
                continue
            out[found["method"]].append({
                "k": int(found["k"]), "pixel_ap": float(row["pixel_ap"]),
                "low": float(row["pixel_ap_ci_low"]), "high": float(row["pixel_ap_ci_high"]),
                "dice": float(row["volume_dice_own"])})
    if not out:
        raise SystemExit(f"{table}: no method label ends in -k<N>")
    return {name: sorted(rows, key=lambda r: r["k"]) for name, rows in out.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("table", type=Path, help="results.csv of the benchmark")
    parser.add_argument("--out", type=Path, required=True, help="PNG to write")
    parser.add_argument("--title", default="")
    parser.add_argument("--unlabelled", default="", help="e.g. '13.7 min of DDPM training'")
    args = parser.parse_args()
    fig, (ap_axis, dice_axis) = plt.subplots(1, 2, figsize=(9, 3.6))
    for name, rows in curves(args.table).items():
        k = [r["k"] for r in rows]
        line, = ap_axis.plot(k, [r["pixel_ap"] for r in rows], marker="o", label=name)
        ap_axis.fill_between(k, [r["low"] for r in rows], [r["high"] for r in rows],
                             color=line.get_color(), alpha=0.15)
        dice_axis.plot(k, [r["dice"] for r in rows], marker="o", color=line.get_color(),
                       label=name)
    for axis, ylabel in ((ap_axis, "pixel AP (95 % CI)"),
                         (dice_axis, "Dice per case, own mask")):
        axis.set_xscale("log")
        axis.set_xlabel("labelled train slices k")
        axis.set_ylabel(ylabel)
        axis.set_ylim(0, 1)
        axis.grid(alpha=0.3)
    dice_axis.legend(loc="lower right")
    title = "label efficiency" + (f", {args.title}" if args.title else "")
    if args.unlabelled:
        title += f" (unlabelled pre-training: {args.unlabelled})"
    fig.suptitle(title)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=120)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
