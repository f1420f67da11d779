"""The review's noise paradox as one figure: pixel AP and healthy residual against the level L.

Too little noise keeps the lesion in the pseudo-healthy image, too much erases healthy detail
(review Bercea 2025, Fig. 9); the implicit-guidance methods (THOR, Bercea 2024; AutoDDPM,
Bercea 2023a) claim to move the trade-off. This script reads the ``sweep.csv`` of several
``benchmarks/sweep.py --grid level=...`` runs on the same slices and draws, per method, pixel
AP (left) and the healthy residual (right: mean |x - x_hat| on healthy brain) against L, and
writes the points as one CSV a script can read. A ``track:`` prefix on a label puts that
track's sweeps on a row of their own (one row of two panels per track)::

    .venv/bin/python benchmarks/noise_paradox.py \\
        tumour:anoddpm=runs/i22/sweep_anoddpm/sweep.csv tumour:thor=runs/i22/sweep_thor/sweep.csv \\
        stroke:anoddpm=runs/i22/stroke_anoddpm/sweep.csv \\
        --png docs/figures/noise_paradox.png --csv benchmarks/results/issue22_noise_paradox.csv
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
    """``[track:]label=path`` items as rows, each with its ``track`` and ``method``, sorted by
    level."""
    rows: list[dict[str, str]] = []
    for item in items:
        name, _, path = item.partition("=")
        track, _, label = name.rpartition(":")
        if not path or not label:
            raise SystemExit(f"{item}: expected [track:]label=path/to/sweep.csv")
        with open(path, newline="") as handle:
            points = list(csv.DictReader(handle))
        if not points or "level" not in points[0]:
            raise SystemExit(f"{path}: not a sweep over the setting 'level'")
        ordered = sorted(points, key=lambda p: int(p["level"]))
        rows += [{"track": track, "method": label, **p} for p in ordered]
    return rows


def draw(rows: list[dict[str, str]], title: str, path: Path) -> None:
    """Two panels per track (one row each), one line per method, levels on the x axis."""
    tracks = list(dict.fromkeys(r["track"] for r in rows))
    colours = {m: f"C{i}" for i, m in enumerate(dict.fromkeys(r["method"] for r in rows))}
    fig, grid = plt.subplots(len(tracks), len(PANELS), figsize=(9.5, 3.6 * len(tracks)),
                             squeeze=False)
    for axes, track in zip(grid, tracks, strict=True):
        on_track = [r for r in rows if r["track"] == track]
        for ax, (metric, name) in zip(axes, PANELS, strict=True):
            for method in dict.fromkeys(r["method"] for r in on_track):
                points = [r for r in on_track if r["method"] == method]
                ax.plot([int(p["level"]) for p in points], [float(p[metric]) for p in points],
                        marker="o", label=method, color=colours[method])
            ax.set_ylim(bottom=0)
            ax.set_xlabel("noise level L")
            ax.set_title(f"{track}: {name}" if track else name)
            ax.grid(alpha=0.3)
        axes[0].legend(fontsize=8)
    fig.suptitle(f"The noise paradox{', ' + title if title else ''}")
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
    fields = ["track", "method", "level", "pixel_ap", "pixel_auroc", "dice_max",
              "healthy_residual", "healthy_rewritten", "nfe", "seconds_per_image"]
    args.csv.parent.mkdir(parents=True, exist_ok=True)
    with open(args.csv, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {args.png} and {args.csv}")


if __name__ == "__main__":
    main()
