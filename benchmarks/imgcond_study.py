"""Baugh's claims on a trained ``imgcond`` run, all from ONE set of restorations.

On test slices of a dataset (a fixed random subset, or all with large counts), each member
of the ensemble restores every slice once; from those restorations the script reports, for
the SSIM map (the paper) and the absolute-residual map:

* pixel AP and best Dice (pooled over foreground pixels of anomalous slices) and image
  AUROC (score = mean of the map) of every member, of the members' mean (what one member is
  worth on average) and of the ensemble (mean map) — the paper's claim is ensemble >= mean
  of members;
* with ``--ssim-windows``, the SSIM map at other window sides too (the paper's 11 pixels
  were chosen on 128² slices, where they cover half the area fraction they cover at 64²);
* on healthy slices, the mean |x - x_hat| inside the brain of each member and of the
  ensemble's mean restoration — image conditioning should make it small;
* network evaluations and seconds per image of the ensemble with the chosen sampler.

Run, e.g.::

    .venv/bin/python benchmarks/imgcond_study.py runs/imgcond_tumour runs/synth/tumour \
        --anomalous 100000 --healthy 100000
    .venv/bin/python benchmarks/imgcond_study.py runs/imgcond_tumour runs/synth/tumour \
        --solver ddpm --steps 50 --anomalous 48 --healthy 48
    .venv/bin/python benchmarks/imgcond_study.py runs/imgcond_tumour runs/synth/tumour \
        --ssim-windows 11,7,5
"""

from __future__ import annotations

import time

import numpy as np
import torch
from sweep import labelled_subset, study_parser

from anodiff.data.anomalies import TASKS, fold_tasks
from anodiff.evaluation.metrics import auroc, average_precision, best_dice
from anodiff.scoring.foreground import foreground
from anodiff.scoring.residuals import absolute_residual
from anodiff.workflows.run import load_run


def map_metrics(maps: torch.Tensor, truth: np.ndarray, labels: np.ndarray, fg: np.ndarray
                ) -> tuple[float, float, float]:
    """(pixel AP, best Dice, image AUROC of the mean map) for maps (N, H, W)."""
    values = maps.numpy()
    sick = labels.astype(bool)
    pixels, scores = truth[sick][fg[sick]], values[sick][fg[sick]]
    image = values.reshape(len(values), -1).mean(1)
    return (average_precision(pixels, scores), best_dice(pixels, scores).dice,
            auroc(labels, image))


def main() -> None:
    parser = study_parser(__doc__.splitlines()[0], anomalous=48, healthy=48)
    parser.add_argument("--solver", default=None, help="override the run's sampler")
    parser.add_argument("--steps", type=int, default=None, help="override the run's steps")
    parser.add_argument("--ssim-windows", default=None,
                        help="comma-separated SSIM window sides to compare (default: the run's)")
    args = parser.parse_args()

    detector, spec = load_run(args.run)
    changes = {k: v for k, v in (("solver", args.solver), ("steps", args.steps)) if v}
    if changes:
        detector = detector.retuned(**changes)
    test = spec.data.open(args.data).split("test")
    images, labels, truth = labelled_subset(test, args.anomalous, args.healthy, args.seed)
    fg_t = foreground(images)
    fg = fg_t.numpy()

    generator = torch.Generator().manual_seed(detector.config.seed)
    begin = time.perf_counter()
    batches = [detector.restore(batch, generator)
               for batch in images.split(detector.config.batch_size)]
    restored, nfe = torch.cat([r for r, _ in batches], 1), batches[0][1]
    seconds = (time.perf_counter() - begin) / len(images)
    cfg = detector.config
    print(f"{labels.sum()} anomalous + {(~labels).sum()} healthy test slices of {args.data}; run "
          f"{args.run}; {len(restored)} members, {cfg.solver} x {cfg.steps} steps: "
          f"{nfe} NFE and {seconds:.2f} s per image (restoration only)\n")

    folds = fold_tasks()
    names = [f"member {f} (tasks {','.join(str(TASKS.index(t)) for t in folds[f].train)})"
             for f in detector.folds]
    print("| member | map | pixel AP | best Dice | image AUROC |\n|---|---|---|---|---|")
    windows = ([int(w) for w in args.ssim_windows.split(",")] if args.ssim_windows
               else [cfg.ssim_window])
    variants = [(f"ssim {w}", {"map": "ssim", "ssim_window": w}) for w in windows]
    for kind, settings in [*variants, ("residual", {"map": "residual"})]:
        per_member = torch.where(fg_t, detector.retuned(**settings).member_maps(images, restored),
                                 torch.zeros(()))
        rows = np.array([map_metrics(m, truth, labels, fg) for m in per_member])
        for name, (ap, dice, image) in zip(names, rows, strict=True):
            print(f"| {name} | {kind} | {ap:.3f} | {dice:.3f} | {image:.3f} |")
        mean = rows.mean(0)
        print(f"| mean of members | {kind} | {mean[0]:.3f} | {mean[1]:.3f} | {mean[2]:.3f} |")
        ap, dice, image = map_metrics(per_member.mean(0), truth, labels, fg)
        print(f"| **ensemble** | {kind} | {ap:.3f} | {dice:.3f} | {image:.3f} |")

    healthy = ~labels
    if healthy.any():
        print("\nhealthy slices, mean |x - x_hat| inside the brain (sum over channels):")
        for name, x_hat in zip(names, restored, strict=True):
            res = absolute_residual(images[healthy], x_hat[healthy])[fg_t[healthy]]
            print(f"- {name}: {float(res.mean()):.4f}")
        res = absolute_residual(images[healthy], restored.mean(0)[healthy])[fg_t[healthy]]
        print(f"- ensemble mean restoration: {float(res.mean()):.4f}")


if __name__ == "__main__":
    main()
