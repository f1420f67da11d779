"""Wolleb et al.'s detail-preservation check for a trained translation run (diffano).

On healthy test slices, compare the mean |x - x_hat| of DDIM encoding + decoding with that
of the DDPM-noise ablation, each without and with guidance, using the run's own networks.

Run: ``.venv/bin/python benchmarks/detail_preservation.py RUN DATA [--slices 128]``.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from anodiff.scoring.foreground import foreground
from anodiff.workflows.run import load_run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run")
    parser.add_argument("data")
    parser.add_argument("--slices", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--level", type=int, default=None, help="L (default: the run's)")
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    detector, spec = load_run(args.run)
    if args.level is not None:
        detector = detector.retuned(level=args.level)
    healthy = spec.data.open(args.data).split("test").healthy()
    rows = np.sort(np.random.default_rng(args.seed).choice(
        len(healthy), min(args.slices, len(healthy)), replace=False))
    x = torch.stack([healthy[int(i)]["image"] for i in rows])
    fg = foreground(x)
    print(f"{len(rows)} healthy test slices of {args.data}, run {args.run}, L = "
          f"{detector.config.level}, {detector.config.steps} + {detector.config.steps} "
          f"{detector.config.solver} steps\n")
    print("| encoding | guidance scale | mean abs(x - x_hat) per channel, brain | NFE |")
    print("|---|---|---|---|")
    for encoding in ("ddim", "ddpm"):
        for scale in (0.0, detector.config.scale):
            result = detector.retuned(encoding=encoding, scale=scale).localize(x)
            error = (x - result.pseudo_healthy).abs().mean(1)[fg].mean().item()
            print(f"| {encoding} | {scale:g} | {error:.4f} | {result.nfe} |")


if __name__ == "__main__":
    main()
