"""Several one-setting sweeps side by side: a metric against the setting, one curve per run.

Reads the ``sweep.csv`` files that ``benchmarks/sweep.py`` writes for a one-setting grid
(for example ``--grid steps=5,10,25,50,100`` on an ``fndm`` and a ``diffano`` run, FNDM's
Fig. 4), and writes a line plot of each ``--metric`` against ``--x`` plus a markdown table
with, for every run and metric, the value at each setting, where the curve peaks, and the
smallest setting within ``--tolerance`` of that peak (the speed a user can buy). Run, e.g.::

    .venv/bin/python benchmarks/compare_sweeps.py fndm=runs/sweeps/fndm_steps_tumour \
        diffano=runs/sweeps/diffano_steps_tumour --x steps --metric dice_max dice_otsu \
        --out runs/sweeps/fig4_tumour.png
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def read_sweep(folder: Path, x: str) -> list[dict[str, float]]:
    """The rows of ``folder/sweep.csv`` as floats, sorted by ``x``."""
    path = folder / "sweep.csv"
    if not path.is_file():
        raise SystemExit(f"{path}: no sweep.csv (run benchmarks/sweep.py --out {folder})")
    with open(path, newline="") as handle:
        rows = [{k: float(v) for k, v in r.items()} for r in csv.DictReader(handle)]
    if not rows or x not in rows[0]:
        raise SystemExit(f"{path}: no column {x!r}")
    return sorted(rows, key=lambda r: r[x])


def knee(rows: list[dict[str, float]], x: str, metric: str, tolerance: float) -> float:
    """The smallest ``x`` whose ``metric`` is within ``tolerance`` of the curve's maximum."""
    best = max(r[metric] for r in rows)
    return next(r[x] for r in rows if r[metric] >= best - tolerance)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweeps", nargs="+", help="label=FOLDER holding sweep.csv")
    parser.add_argument("--x", required=True, help="the swept setting (the x axis)")
    parser.add_argument("--metric", nargs="+", default=["dice_max"])
    parser.add_argument("--tolerance", type=float, default=0.01,
                        help="'within the peak' margin for the knee (metric units)")
    parser.add_argument("--out", type=Path, required=True, help="the plot (.png)")
    args = parser.parse_args()
    runs = {}
    for item in args.sweeps:
        label, _, folder = item.partition("=")
        runs[label] = read_sweep(Path(folder), args.x)

    fig, axes = plt.subplots(1, len(args.metric), figsize=(4.2 * len(args.metric), 3.4),
                             squeeze=False)
    for ax, metric in zip(axes[0], args.metric, strict=True):
        for label, rows in runs.items():
            ax.plot([r[args.x] for r in rows], [r[metric] for r in rows], marker="o",
                    label=label)
        ax.set_xscale("log")
        ax.set_xlabel(args.x)
        ax.set_title(metric)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    plt.close(fig)

    xs = sorted({r[args.x] for rows in runs.values() for r in rows})
    head = ["run", "metric", *[f"{args.x}={x:g}" for x in xs], "peak at",
            f"within {args.tolerance:g} of peak from"]
    print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for metric in args.metric:
        for label, rows in runs.items():
            by_x = {r[args.x]: r[metric] for r in rows}
            peak = max(rows, key=lambda r: r[metric])[args.x]
            cells = [f"{by_x[x]:.3f}" if x in by_x else "–" for x in xs]
            print(f"| {label} | {metric} | " + " | ".join(cells)
                  + f" | {peak:g} | {knee(rows, args.x, metric, args.tolerance):g} |")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
