"""What FNDM's memory-bank condition is worth, on one fixed subset of test slices.

On a trained ``fndm`` run with the memory bank (``hybrid.coarse_map`` on), for ``--anomalous``
slices with a lesion and ``--healthy`` without, the script reports pixel AUROC, pixel AP and
best Dice (pooled over the brain pixels of the anomalous slices, as the evaluation does),
the mean Otsu Dice and the image AUROC (99th-percentile score) of:

* ``bank``: the memory bank's nearest-neighbour distance alone (PatchCore on the
  classifier's features, no diffusion): what the coarse condition knows before FNDM refines
  it;
* ``fndm``: the method as trained, the input's memory-bank map as ``x_seg``;
* ``fndm, x_seg binarised``: the input's map set to 1 wherever it is > 0 (the training
  masks are binary; the memory-bank map is soft);
* ``fndm, x_seg = 0``: the same networks told that nothing is anomalous;
* ``fndm, x_seg = truth``: the same networks given the true lesion mask (an oracle coarse
  map: the headroom a better memory bank could buy).

It also reports how much of the lesion and of the healthy brain the scaled condition
``x_seg`` marks (> 0). Run, e.g.::

    .venv/bin/python benchmarks/fndm_study.py runs/fndm_tumour runs/synth/tumour \
        --anomalous 96 --healthy 32
"""

from __future__ import annotations

import numpy as np
import torch
from sweep import labelled_subset, study_parser

from anodiff.evaluation.metrics import Overlap, auroc, average_precision, best_dice
from anodiff.methods import AnomalyResult
from anodiff.methods.fndm import FNDM, HybridProvider
from anodiff.report.tables import markdown_table
from anodiff.scoring.foreground import foreground
from anodiff.scoring.rules import image_scores
from anodiff.scoring.thresholds import per_image_otsu
from anodiff.workflows.run import load_run


def localize_with(detector: FNDM, images: torch.Tensor, coarse: torch.Tensor | None
                  ) -> AnomalyResult:
    """FNDM's localisation, with ``coarse`` (N, 1, H, W) as ``x_seg`` when given.

    The given maps reach the network through a condition provider (with the input image as
    ``x0^n``, as the method has it), one batch of the detector's size at a time; the
    networks, solver and settings are the run's.
    """
    if coarse is None:
        return detector.localize(images)
    parts = []
    try:
        for rows in torch.arange(len(images)).split(detector.config.batch_size):
            detector.conditions = HybridProvider(
                image=detector.config.hybrid.image,
                coarse=lambda x, given=coarse[rows]: given.to(x))
            parts.append(detector.localize(images[rows]))
    finally:
        detector.conditions = None  # the fitted memory-bank conditions again
    return AnomalyResult(anomaly_map=torch.cat([p.anomaly_map for p in parts]),
                         score=torch.cat([p.score for p in parts]), nfe=parts[0].nfe,
                         mask=torch.cat([p.mask for p in parts]))


def row(name: str, maps: torch.Tensor, scores: torch.Tensor, masks: np.ndarray,
        truth: np.ndarray, labels: np.ndarray, fg: np.ndarray) -> dict[str, object]:
    """The study's metrics for maps (N, H, W) of anomalous-then-healthy slices."""
    values = maps.float().numpy()
    sick = labels.astype(bool)
    pixels, pixel_scores = truth[sick][fg[sick]], values[sick][fg[sick]]
    dice_otsu = np.mean([Overlap.of(m, t).dice for m, t in zip(masks[sick], truth[sick],
                                                                strict=True)])
    return {"map": name, "pixel_auroc": auroc(pixels, pixel_scores),
            "pixel_ap": average_precision(pixels, pixel_scores),
            "dice_max": best_dice(pixels, pixel_scores).dice, "dice_otsu": float(dice_otsu),
            "image_auroc": auroc(labels, scores.numpy())}


def main() -> None:
    args = study_parser(__doc__.splitlines()[0], anomalous=96, healthy=32).parse_args()
    detector, spec = load_run(args.run)
    if not isinstance(detector, FNDM) or not detector.config.hybrid.coarse_map:
        raise SystemExit(f"{args.run}: needs an fndm run with hybrid.coarse_map on")
    test = spec.data.open(args.data).split("test")
    images, labels, truth = labelled_subset(test, args.anomalous, args.healthy, args.seed)
    fg_t = foreground(images)
    fg = fg_t.numpy()
    print(f"{labels.sum()} anomalous + {(~labels).sum()} healthy test slices of {args.data}; run "
          f"{args.run}; L = {detector.config.level}, {detector.config.steps} steps, "
          f"s = {detector.config.scale}\n")

    mapper = detector.coarse_mapper()
    distances = mapper.distances(images)
    x_seg = mapper.scale(distances)[:, 0]
    marked = (x_seg > 0).numpy()
    lesion = truth & fg
    healthy_brain = fg & ~labels[:, None, None]
    print(f"x_seg > 0 on {marked[lesion].mean():.1%} of lesion pixels, "
          f"{marked[fg & ~truth & labels[:, None, None]].mean():.1%} of the anomalous slices' "
          f"normal brain, {marked[healthy_brain].mean():.1%} of the healthy slices' brain\n")
    rows = [row("bank (no diffusion)", distances,
                image_scores(distances, fg_t, "percentile",
                             percentile=detector.config.score_percentile),
                per_image_otsu(distances.numpy(), fg), truth, labels, fg)]
    oracle = torch.from_numpy(truth).float()[:, None]
    binary = (x_seg > 0).float()[:, None]
    for name, coarse in (("fndm", None), ("fndm, x_seg binarised", binary),
                         ("fndm, x_seg = 0", torch.zeros_like(oracle)),
                         ("fndm, x_seg = truth (oracle)", oracle)):
        torch.manual_seed(args.seed)
        result = localize_with(detector, images, coarse)
        rows.append(row(name, result.anomaly_map, result.score, result.mask.numpy(), truth,
                        labels, fg))
    print(markdown_table(rows, list(rows[0]), digits=3))


if __name__ == "__main__":
    main()
