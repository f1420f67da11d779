"""Test-time setting sweeps for a trained run: sensitivity grids, solver speed at equal quality.

Re-uses a run's trained networks and changes only inference settings (for diffano: the level
L, the guidance scale s, the steps, the solver), so a grid costs inference, never training.
Each point localises the same fixed subset of test slices — ``--anomalous`` slices with a
lesion and ``--healthy`` without — and reports (``--split val`` takes them from the validation
split instead, to choose a setting without looking at the test split):

* ``pixel_auroc``, ``pixel_ap``, ``dice_max`` over the brain pixels of the anomalous slices
  (the evaluation protocol's pooling), ``dice_otsu`` the mean Dice of the method's own mask;
* ``healthy_residual``: on the healthy slices' brain, the mean |x - x_hat| per channel for
  methods that give a pseudo-healthy image (detail preservation), else the mean map value
  (NaN with ``--healthy 0``); ``healthy_rewritten``: the share of that brain where the
  pseudo-healthy image moved more than 0.01 from the input in some channel (how much healthy
  tissue the method re-draws at all: AutoDDPM keeps the input outside its mask);
* for a method with a calibrated threshold (``anoddpm``), ``dice_otsu`` is the Dice of its
  own mask, whose threshold stays the one calibrated at training with the run's settings;
* ``nfe`` and ``seconds_per_image``.

With ``--refit``, what a run fitted on healthy slices after training is refitted
for every point (InvDetect's one-class model, tau and lambda depend on the inversion).

Run, e.g. Wolleb's sensitivity study (Fig. 5 of the paper) on a diffano run::

    .venv/bin/python benchmarks/sweep.py runs/diffano_tumour runs/synth/tumour \\
        --grid level=100,200,300,400 --grid scale=0,10,20,50 --out runs/sweeps/diffano

It writes ``sweep.csv``, ``sweep.md`` and, for a two-setting grid, ``sweep.png`` (one
heat map per metric).
"""

from __future__ import annotations

import argparse
import csv
import itertools
import time
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402

from anodiff.evaluation.metrics import Overlap, auroc, average_precision, best_dice  # noqa: E402
from anodiff.methods import Detector  # noqa: E402
from anodiff.report.tables import markdown_table  # noqa: E402
from anodiff.scoring.foreground import foreground  # noqa: E402
from anodiff.workflows.run import load_run  # noqa: E402

HEATMAP_METRICS = ("pixel_auroc", "pixel_ap", "dice_max", "dice_otsu", "healthy_residual")


def parse_grid(items: list[str], config: Any) -> dict[str, list[Any]]:
    """``key=v1,v2`` items as value lists (YAML scalars; a float setting's ints as floats)."""
    grid: dict[str, list[Any]] = {}
    for item in items:
        key, _, values = item.partition("=")
        if not hasattr(config, key):
            raise SystemExit(f"--grid {item}: {type(config).__name__} has no setting {key!r}")
        as_float = isinstance(getattr(config, key), float)
        grid[key] = [float(v) if as_float and isinstance(v, int) else v
                     for v in (yaml.safe_load(text) for text in values.split(","))]
    return grid


def study_parser(description: str, anomalous: int, healthy: int) -> argparse.ArgumentParser:
    """The arguments every study script takes: a run, a dataset, and the subset's sizes."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("run", type=Path)
    parser.add_argument("data", type=Path)
    parser.add_argument("--anomalous", type=int, default=anomalous)
    parser.add_argument("--healthy", type=int, default=healthy)
    parser.add_argument("--seed", type=int, default=0)
    return parser


def subset(data: Any, n_anomalous: int, n_healthy: int, seed: int
           ) -> tuple[torch.Tensor, np.ndarray, torch.Tensor]:
    """A fixed random choice of anomalous slices (images, masks) and of healthy slices."""
    rng = np.random.default_rng(seed)
    labels = np.asarray(data.labels).astype(bool)
    sick = rng.choice(np.flatnonzero(labels), min(n_anomalous, int(labels.sum())), replace=False)
    well = rng.choice(np.flatnonzero(~labels), min(n_healthy, int((~labels).sum())),
                      replace=False)
    x = torch.stack([torch.as_tensor(data[int(i)]["image"]) for i in np.sort(sick)])
    truth = np.stack([np.asarray(data[int(i)]["mask"], dtype=bool) for i in np.sort(sick)])
    healthy = torch.stack([torch.as_tensor(data[int(i)]["image"]) for i in np.sort(well)]) \
        if len(well) else x[:0]
    return x, truth, healthy


def labelled_subset(data: Any, n_anomalous: int, n_healthy: int, seed: int
                    ) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """:func:`subset` as one stack, anomalous slices first: images, image labels, masks
    (all-false for the healthy slices)."""
    sick, truth_sick, well = subset(data, n_anomalous, n_healthy, seed)
    labels = np.r_[np.ones(len(sick), bool), np.zeros(len(well), bool)]
    truth = np.concatenate([truth_sick, np.zeros((len(well), *truth_sick.shape[1:]), bool)])
    return torch.cat([sick, well]), labels, truth


def measure(detector: Detector, x: torch.Tensor, truth: np.ndarray, healthy: torch.Tensor
            ) -> dict[str, float]:
    """The sweep's metrics for one setting (see the module docstring)."""
    torch.manual_seed(0)
    begin = time.perf_counter()
    result = detector.localize(x)
    seconds = (time.perf_counter() - begin) / len(x)
    fg = foreground(x).numpy()
    maps = result.anomaly_map.float().numpy()
    labels, scores = truth[fg], maps[fg]
    dice_otsu = float("nan")
    if result.mask is not None:
        masks = result.mask.numpy()
        dice_otsu = float(np.mean([Overlap.of(m, t).dice for m, t in zip(masks, truth,
                                                                         strict=True)]))
    residual = rewritten = float("nan")
    if len(healthy):
        healthy_result = detector.localize(healthy)
        healthy_fg = foreground(healthy)
        if healthy_result.pseudo_healthy is not None:
            change = (healthy - healthy_result.pseudo_healthy).abs()
            residual = change.mean(1)[healthy_fg].mean().item()
            rewritten = (change.amax(1) > 0.01)[healthy_fg].float().mean().item()
        else:
            residual = healthy_result.anomaly_map.float()[healthy_fg].mean().item()
    return {"pixel_auroc": auroc(labels, scores), "pixel_ap": average_precision(labels, scores),
            "dice_max": best_dice(labels, scores).dice, "dice_otsu": dice_otsu,
            "healthy_residual": residual, "healthy_rewritten": rewritten, "nfe": float(result.nfe),
            "seconds_per_image": seconds}


def heatmaps(rows: list[dict[str, Any]], grid: dict[str, list[Any]], path: Path) -> None:
    """One heat map per metric over a two-setting grid (rows: first setting)."""
    (ykey, yvalues), (xkey, xvalues) = grid.items()
    fig, axes = plt.subplots(1, len(HEATMAP_METRICS), figsize=(3.4 * len(HEATMAP_METRICS), 3.2))
    for ax, metric in zip(axes, HEATMAP_METRICS, strict=True):
        values = np.array([[next(r[metric] for r in rows if r[ykey] == y and r[xkey] == x)
                            for x in xvalues] for y in yvalues])
        image = ax.imshow(values, cmap="viridis", origin="lower", aspect="auto")
        for (i, j), v in np.ndenumerate(values):
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", color="w", fontsize=8)
        ax.set_xticks(range(len(xvalues)), [str(v) for v in xvalues])
        ax.set_yticks(range(len(yvalues)), [str(v) for v in yvalues])
        ax.set_xlabel(xkey)
        ax.set_ylabel(ykey)
        ax.set_title(metric)
        fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = study_parser(__doc__.splitlines()[0], anomalous=64, healthy=32)
    parser.add_argument("--grid", action="append", default=[],
                        help="setting=v1,v2,... (repeatable; the product is swept)")
    parser.add_argument("--set", action="append", default=[], dest="fixed",
                        help="setting=value held fixed for every point")
    parser.add_argument("--refit", action="store_true",
                        help="refit, for every point, what the run fitted on healthy slices "
                             "after training (a healthy-FPR threshold; InvDetect's one-class "
                             "model, tau, lambda)")
    parser.add_argument("--split", choices=("test", "val"), default="test",
                        help="the split the slices come from (val: to choose a setting)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    detector, spec = load_run(args.run)
    refit_data = spec.data.open(args.data) if args.refit else None
    fixed = {k: v[0] for k, v in parse_grid(args.fixed, detector.config).items()}
    grid = parse_grid(args.grid, detector.config)
    slices = spec.data.open(args.data).split(args.split)
    x, truth, healthy = subset(slices, args.anomalous, args.healthy, args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"{len(x)} anomalous + {len(healthy)} healthy {args.split} slices of {args.data}; "
          f"run {args.run}; fixed {fixed}")
    rows: list[dict[str, Any]] = []
    for values in itertools.product(*grid.values()):
        settings = dict(zip(grid, values, strict=True))
        variant = detector.retuned(keep_state=True, **fixed, **settings)
        if refit_data is not None:
            variant.refit(refit_data)
        row = {**settings, **measure(variant, x, truth, healthy)}
        rows.append(row)
        print("  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                        for k, v in row.items()), flush=True)
    with open(args.out / "sweep.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    (args.out / "sweep.md").write_text(markdown_table(rows, list(rows[0]), digits=4))
    if len(grid) == 2:
        heatmaps(rows, grid, args.out / "sweep.png")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
