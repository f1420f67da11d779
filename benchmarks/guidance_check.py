"""Why does a run fail? Its guidance classifier, and what its image score tracks.

Classifier guidance (``diffano``) can only remove what its noise-aware classifier sees. On a
fixed random subset of test slices (``--anomalous`` with a lesion, ``--healthy`` without)
this script reports, for a trained run:

* for a run with a guidance classifier (``diffano``), the classifier at several noise
  levels: AUROC of p(diseased | x_l) against the slice label, and the mean p(diseased) on
  diseased and on healthy slices (a classifier that calls nearly everything healthy gives
  guidance toward "healthy" little to push on);
* the run's image-level AUROC on the subset, and the Spearman correlation of its image
  score with the slice's brain area (a score that follows brain area measures anatomy,
  not lesions: lesions of some tracks only occur in large central slices);
* the same AUROC for brain area alone (how much of the image AUROC the confound explains).

Run, e.g.::

    .venv/bin/python benchmarks/guidance_check.py runs/diffano_lowcontrast runs/synth/lowcontrast
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.stats import spearmanr
from sweep import study_parser, subset

from anodiff.diffusion.guidance import network_timesteps
from anodiff.diffusion.schedule import NoiseSchedule
from anodiff.evaluation.metrics import auroc
from anodiff.scoring.foreground import foreground
from anodiff.workflows.run import load_run


def classifier_table(classifier: torch.nn.Module, schedule: NoiseSchedule, images: torch.Tensor,
                     labels: np.ndarray, levels: list[int], seed: int) -> list[str]:
    """One line per level: AUROC and mean p(diseased) of ``classifier`` on q_sampled images."""
    lines = []
    for level in levels:
        generator = torch.Generator().manual_seed(seed + level)
        noisy = images if level == 0 else schedule.q_sample(
            images, level, torch.randn(images.shape, generator=generator))
        with torch.no_grad():
            logits = classifier(noisy, network_timesteps(torch.full((len(images),), level)))
        p_sick = logits.softmax(1)[:, 1].numpy()
        lines.append(f"| {level} | {auroc(labels, p_sick):.3f} | {p_sick[labels].mean():.3f} | "
                     f"{p_sick[~labels].mean():.3f} |")
    return lines


def main() -> None:
    parser = study_parser(__doc__.splitlines()[0], anomalous=48, healthy=48)
    parser.add_argument("--levels", default="0,50,100,250,500",
                        help="noise levels at which to test the classifier")
    args = parser.parse_args()

    detector, spec = load_run(args.run)
    classifier = getattr(detector, "classifier", None)
    test = spec.data.open(args.data).split("test")
    sick, _, well = subset(test, args.anomalous, args.healthy, args.seed)
    images = torch.cat([sick, well])
    labels = np.r_[np.ones(len(sick), bool), np.zeros(len(well), bool)]
    levels = [int(v) for v in args.levels.split(",")]

    print(f"{len(sick)} anomalous + {len(well)} healthy test slices of {args.data}; "
          f"run {args.run}")
    if classifier is not None:
        print("\n| level | classifier AUROC | mean p(diseased), diseased | "
              "mean p(diseased), healthy |\n|---|---|---|---|")
        print("\n".join(classifier_table(classifier.eval(), detector.schedule, images, labels,
                                         levels, args.seed)))

    torch.manual_seed(args.seed)
    score = detector.localize(images).score.float().numpy()
    area = foreground(images).flatten(1).float().mean(1).numpy()
    rho = spearmanr(score, area).statistic
    print(f"\nimage AUROC of the run's score: {auroc(labels, score):.3f}")
    print(f"brain area (share of the slice): diseased {area[labels].mean():.3f}, "
          f"healthy {area[~labels].mean():.3f}; AUROC of brain area alone "
          f"{auroc(labels, area):.3f}")
    print(f"Spearman correlation of the image score with brain area: {rho:.3f}")


if __name__ == "__main__":
    main()
