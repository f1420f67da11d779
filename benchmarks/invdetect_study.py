"""InvDetect's claims on a trained run: refinement, runtime breakdown, latent separation.

On a fixed subset of test slices (``--anomalous`` with a lesion, ``--healthy`` without):

* **refinement** (the paper's Table 2 claim): mean Dice and precision over the anomalous
  slices of the graph-cut mask (InvDetect) and of ``A > 0`` (InvDetect w/o SCR), both from
  the same maps, and the flagged share of healthy brain for each;
* **the refinement's two settings**: the same figures for every tau in ``--taus`` (``auto``:
  the run's calibrated tau) and lambda in ``--lambdas``;
* **runtime per image** split into DDIM inversion, one-class scoring, Eq. 1 aggregation
  (with the latent aggregates r_p) and refinement;
* **separation** (the paper's central claim): the patch scores of normal patches (no lesion
  pixel) and of lesion-containing patches (>= ``--lesion-share`` of their pixels lesion),
  in the noise latent space and for the same kind of one-class model fitted on the raw
  pixels of the same healthy training patches; patch-level AUROC for both and a figure.

Run::

    .venv/bin/python benchmarks/invdetect_study.py runs/invdetect_tumour runs/synth/tumour \\
        --anomalous 64 --healthy 32 --out runs/invdetect_study [--set level=250]

Writes ``study.json`` and ``separation.png`` into ``--out``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from sweep import parse_grid, study_parser, subset  # noqa: E402

from anodiff.evaluation.metrics import Overlap, auroc  # noqa: E402
from anodiff.methods.invdetect import InvDetect, neighbour_distances  # noqa: E402
from anodiff.methods.training_data import training_images  # noqa: E402
from anodiff.scoring.graphcut import NeighbourDistances, refine_masks  # noqa: E402
from anodiff.scoring.one_class import fit_one_class  # noqa: E402
from anodiff.workflows.run import load_run  # noqa: E402


def mask_figures(masks: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    overlaps = [Overlap.of(m, t) for m, t in zip(masks, truth, strict=True)]
    return {"dice": float(np.mean([o.dice for o in overlaps])),
            "precision": float(np.nanmean([o.precision for o in overlaps]))}


def patch_scores(det: InvDetect, images: torch.Tensor, truth: np.ndarray, share: float,
                 pixel_model) -> dict[str, np.ndarray]:
    """Latent and pixel-space scores of foreground patches, split by lesion content."""
    patches, holds_brain = det.patches(images)
    lesion = det.grid.extract(torch.from_numpy(truth)[:, None].float()).flatten(2).mean(-1)
    kept = patches[holds_brain]
    latent = det.one_class.score(torch.cat([det.invert(c) for c in kept.split(1024)]))
    pixel = pixel_model.score(kept.flatten(1))
    content = lesion[holds_brain]
    normal, abnormal = content == 0, content >= share
    return {"latent_normal": latent[normal].numpy(), "latent_lesion": latent[abnormal].numpy(),
            "pixel_normal": pixel[normal].numpy(), "pixel_lesion": pixel[abnormal].numpy()}


def analyse(det: InvDetect, images: torch.Tensor
            ) -> tuple[np.ndarray, NeighbourDistances, np.ndarray]:
    """The map A (zero outside the brain), the latent neighbour distances and the brain."""
    done = det.process(images)
    return (done.anomaly_map.numpy(), neighbour_distances(done.raw),
            done.foreground.numpy())


def stage_seconds(det: InvDetect, images: torch.Tensor, analysis: float) -> dict[str, float]:
    """Seconds per image of the inversion and the one-class scoring, timed on their own, and
    of the rest of the analysis (Eq. 1 aggregation with the latent aggregates r_p)."""
    patches, holds_brain = det.patches(images)
    start = time.perf_counter()
    latents = torch.cat([det.invert(c) for c in patches[holds_brain].split(1024)])
    inversion = time.perf_counter() - start
    start = time.perf_counter()
    det.one_class.score(latents)
    scoring = time.perf_counter() - start
    n = len(images)
    return {"inversion": inversion / n, "scoring": scoring / n,
            "aggregation": max(analysis - inversion - scoring, 0.0) / n}


def separation_figure(scores: dict[str, np.ndarray], aurocs: dict[str, float],
                      path: Path) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for ax, space, title in zip(axes, ("latent", "pixel"),
                                ("noise latent space (DDIM inversion)", "raw pixel space"),
                                strict=True):
        normal, lesion = scores[f"{space}_normal"], scores[f"{space}_lesion"]
        bins = np.linspace(min(normal.min(), lesion.min()), max(normal.max(), lesion.max()), 60)
        ax.hist(normal, bins, density=True, alpha=0.6, label=f"normal ({len(normal)})")
        ax.hist(lesion, bins, density=True, alpha=0.6, label=f"lesion ({len(lesion)})")
        ax.axvline(0, color="k", lw=0.8)
        ax.set_title(f"{title}\npatch AUROC {aurocs[space]:.3f}", fontsize=9)
        ax.set_xlabel("one-class score (> 0: outside the boundary)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = study_parser(__doc__.splitlines()[0], anomalous=64, healthy=32)
    parser.add_argument("--lesion-share", type=float, default=0.1)
    parser.add_argument("--taus", default="auto,10")
    parser.add_argument("--lambdas", default="0.5,2,25,128,256,512,1024,4096")
    parser.add_argument("--set", action="append", default=[], dest="settings",
                        help="setting=value; the one-class model, tau and lambda are then "
                             "refitted on the healthy training slices")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    det, spec = load_run(args.run)
    if not isinstance(det, InvDetect):
        raise SystemExit(f"{args.run} is a {det.name} run, not invdetect")
    dataset = spec.data.open(args.data)
    train_healthy, _ = training_images(dataset, det.supervision)
    if args.settings:
        settings = {k: v[0] for k, v in parse_grid(args.settings, det.config).items()}
        det = det.retuned(keep_state=True, **settings)
        det.refit(dataset)
    x, truth, healthy = subset(dataset.split("test"), args.anomalous, args.healthy, args.seed)
    args.out.mkdir(parents=True, exist_ok=True)

    begin = time.perf_counter()
    score_map, distances, fg = analyse(det, x)
    analysis_seconds = time.perf_counter() - begin
    start = time.perf_counter()
    refined = refine_masks(score_map, distances, det.tau, det.lam, fg)
    refinement = time.perf_counter() - start
    plain = (score_map > 0) & fg
    healthy_map, healthy_distances, healthy_fg = analyse(det, healthy)
    flagged = {
        "with_refinement": float(refine_masks(healthy_map, healthy_distances, det.tau, det.lam,
                                              healthy_fg)[healthy_fg].mean()),
        "without_refinement": float((healthy_map > 0)[healthy_fg].mean()),
    }
    grid = []
    for tau_text in args.taus.split(","):
        tau = det.tau if tau_text == "auto" else float(tau_text)
        for lam in (float(v) for v in args.lambdas.split(",")):
            masks = refine_masks(score_map, distances, tau, lam, fg)
            healthy_masks = refine_masks(healthy_map, healthy_distances, tau, lam, healthy_fg)
            grid.append({"tau": tau, "lambda": lam, **mask_figures(masks, truth),
                         "healthy_flagged_share": float(healthy_masks[healthy_fg].mean())})
    seconds = stage_seconds(det, x, analysis_seconds)
    seconds["refinement"] = refinement / len(x)
    seconds["total"] = (analysis_seconds + refinement) / len(x)

    normal = det.foreground_patches(train_healthy)
    pick, _ = det.normality_draws(len(normal), len(train_healthy))  # the one-class fit's
    pixel_model = fit_one_class(normal[pick].flatten(1), det.config.one_class, det.config.nu,
                                components=det.config.nystroem_components)
    scores = patch_scores(det, x, truth, args.lesion_share, pixel_model)
    aurocs = {space: auroc(np.r_[np.zeros(len(scores[f"{space}_normal"])),
                                 np.ones(len(scores[f"{space}_lesion"]))],
                           np.r_[scores[f"{space}_normal"], scores[f"{space}_lesion"]])
              for space in ("latent", "pixel")}
    separation_figure(scores, aurocs, args.out / "separation.png")

    study = {
        "run": str(args.run), "data": str(args.data), "anomalous_slices": len(x),
        "healthy_slices": len(healthy), "settings": {
            k: getattr(det.config, k) for k in ("patch_size", "level", "inversion_steps",
                                                "solver", "one_class", "nu", "fit_patches")},
        "tau": det.tau, "lambda": det.lam, "calibrated_area": float(det.calibrated_area),
        "with_refinement": mask_figures(refined, truth),
        "without_refinement": mask_figures(plain, truth),
        "healthy_flagged_share": flagged, "refinement_grid": grid,
        "seconds_per_image": seconds,
        "patch_auroc": aurocs, "lesion_share": args.lesion_share,
        "patches": {k: len(v) for k, v in scores.items()},
    }
    (args.out / "study.json").write_text(json.dumps(study, indent=2))
    print(json.dumps(study, indent=2))


if __name__ == "__main__":
    main()
