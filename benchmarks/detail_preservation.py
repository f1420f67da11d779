"""Wolleb et al.'s detail-preservation check for a trained translation run (diffano).

On healthy test slices, compare the mean |x - x_hat| of DDIM encoding + decoding with that
of the DDPM-noise ablation, each without and with guidance, using the run's own networks.

Run: ``.venv/bin/python benchmarks/detail_preservation.py RUN DATA [--slices 128]``.
"""

from __future__ import annotations

import argparse
import dataclasses

import numpy as np
import torch

from anodiff.methods.common import foreground
from anodiff.workflows.run import load_run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run")
    parser.add_argument("data")
    parser.add_argument("--slices", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    detector, spec = load_run(args.run)
    healthy = spec.data.open(args.data).split("test").healthy()
    rows = np.sort(np.random.default_rng(args.seed).choice(
        len(healthy), min(args.slices, len(healthy)), replace=False))
    x = torch.stack([healthy[int(i)]["image"] for i in rows])
    fg = foreground(x)
    print(f"{len(rows)} healthy test slices of {args.data}, run {args.run}\n")
    print("| encoding | guidance scale | mean abs(x - x_hat) per channel, brain | NFE |")
    print("|---|---|---|---|")
    for encoding in ("ddim", "ddpm"):
        for scale in (0.0, detector.config.scale):
            config = dataclasses.replace(detector.config, encoding=encoding, scale=scale)
            other = type(detector)(config)
            for name, net in detector.networks().items():
                setattr(other, name, net)
            other.input_shape = detector.input_shape
            result = other.localize(x)
            error = (x - result.pseudo_healthy).abs().mean(1)[fg].mean().item()
            print(f"| {encoding} | {scale:g} | {error:.4f} | {result.nfe} |")


if __name__ == "__main__":
    main()
