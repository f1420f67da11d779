"""The review's noise paradox as one figure: pixel AP and healthy residual against the level L.

Too little noise keeps the lesion in the pseudo-healthy image, too much erases healthy detail
(review Bercea 2025, Fig. 9); the implicit-guidance methods (THOR, Bercea 2024; AutoDDPM,
Bercea 2023a) claim to move the trade-off. This script reads the ``sweep.csv`` of several
``benchmarks/sweep.py --grid level=...`` runs on the same slices and draws, per method, pixel
AP (left) and the healthy residual (right: mean |x - x_hat| on healthy brain) against L, and
writes the points as one CSV a script can read::

    .venv/bin/python benchmarks/noise_paradox.py \\
        anoddpm=runs/i22/sweep_anoddpm/sweep.csv thor=runs/i22/sweep_thor/sweep.csv \\
        --title "tumour track" --png docs/figures/noise_paradox_tumour.png \\
        --csv benchmarks/results/issue22_noise_paradox_tumour.csv
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

PANELS = (("pixel_ap", "pixel AP (lesioned slices)"),
          ("healthy_residual", "healthy residual, mean |x - x̂|"))


def read_sweeps(items: list[str]) -> list[dict[str, str]]:
    """``label=path`` items as rows, each with its ``method`` label, sorted by level."""
    rows: list[dict[str, str]] = []
    for item in items:
        label, _, path = item.partition("=")
        if not path:
            raise SystemExit(f"{item}: expected label=path/to/sweep.csv")
        with open(path, newline="") as handle:
            points = list(csv.DictReader(handle))
        if not points or "level" not in points[0]:
            raise SystemExit(f"{path}: not a sweep over the setting 'level'")
        rows += [{"method": label, **p} for p in sorted(points, key=lambda p: int(p["level"]))]
    return rows


def draw(rows: list[dict[str, str]], title: str, path: Path) -> None:
    """Two panels, one line per method, levels on the x axis."""
    fig, axes = plt.subplots(1, len(PANELS), figsize=(9.5, 3.6))
    for ax, (metric, name) in zip(axes, PANELS, strict=True):
        for method in dict.fromkeys(r["method"] for r in rows):
            points = [r for r in rows if r["method"] == method]
            ax.plot([int(p["level"]) for p in points], [float(p[metric]) for p in points],
                    marker="o", label=method)
        ax.set_xlabel("noise level L")
        ax.set_title(name)
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.suptitle(f"The noise paradox, {title}")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweeps", nargs="+", help="label=path/to/sweep.csv")
    parser.add_argument("--title", default="")
    parser.add_argument("--png", type=Path, required=True)
    parser.add_argument("--csv", type=Path, required=True)
    args = parser.parse_args()
    rows = read_sweeps(args.sweeps)
    draw(rows, args.title, args.png)
    fields = ["method", "level", "pixel_ap", "pixel_auroc", "dice_max", "healthy_residual",
              "nfe", "seconds_per_image"]
    args.csv.parent.mkdir(parents=True, exist_ok=True)
    with open(args.csv, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {args.png} and {args.csv}")


if __name__ == "__main__":
    main()
