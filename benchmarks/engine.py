"""Speed of the diffusion engine: network evaluation, training step, sampler overhead, noise.

Run: ``.venv/bin/python benchmarks/engine.py [--preset cpu] [--size 64] [--batch 32]``.
Prints a Markdown table for docs/BENCHMARKS.md. Each figure is the median of ``--repeats``
timed calls after one warm-up call, with torch limited to ``--threads`` threads.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable
from datetime import date

import torch

from anodiff.diffusion.guidance import classifier_guided, classifier_logits, unet_eps
from anodiff.diffusion.noise import simplex_noise
from anodiff.diffusion.objectives import DiffusionObjective
from anodiff.diffusion.samplers import decode, encode
from anodiff.diffusion.schedule import NoiseSchedule
from anodiff.diffusion.training import ArrayDataset, TrainConfig, Trainer
from anodiff.nets.builders import build_classifier, build_unet, count_parameters


def median_seconds(fn: Callable[[], object], repeats: int) -> float:
    """Median wall-clock seconds of ``fn`` over ``repeats`` calls, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


class ZeroEps:
    """A free noise predictor: isolates what the sampler itself costs per step."""

    nfe_per_call = 1

    def __call__(self, x: torch.Tensor, level: torch.Tensor, y=None) -> torch.Tensor:
        return torch.zeros_like(x)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    shape = (args.batch, 1, args.size, args.size)
    x = torch.rand(shape)
    schedule = NoiseSchedule.create("linear", 1000)
    unet = build_unet(args.preset, 1).eval()
    eps = unet_eps(unet)
    level = torch.full((args.batch,), 500)
    rows: list[tuple[str, str]] = []

    with torch.no_grad():
        nfe = median_seconds(lambda: eps(x, level), args.repeats)
    rows.append((f"one network evaluation (NFE), batch {args.batch}",
                 f"{nfe * 1e3:.0f} ms ({nfe / args.batch * 1e3:.1f} ms per image)"))

    steps = 20
    for solver in ("ddim", "dpmpp2m", "ddpm"):
        seconds = median_seconds(
            lambda solver=solver: decode(ZeroEps(), x, schedule, 500, steps, solver),
            args.repeats)
        rows.append((f"sampler overhead per step, {solver}",
                     f"{seconds / steps * 1e3:.2f} ms = {seconds / steps / nfe:.2%} of one NFE"))
    seconds = median_seconds(
        lambda: encode(ZeroEps(), x, schedule, 500, steps, "dpmpp2m"), args.repeats)
    rows.append(("sampler overhead per step, dpmpp2m encoding",
                 f"{seconds / steps * 1e3:.2f} ms = {seconds / steps / nfe:.2%} of one NFE"))
    seconds = median_seconds(
        lambda: decode(ZeroEps(), x, schedule, 500, steps, "ddpm", noise="simplex",
                       noise_options={"frequency": args.size / 4}), args.repeats)
    rows.append(("sampler step, ddpm with simplex noise (noise included)",
                 f"{seconds / steps * 1e3:.1f} ms = {seconds / steps / nfe:.1%} of one NFE"))

    classifier = build_classifier(args.preset, 1, 2, (args.size, args.size)).eval()
    guided = classifier_guided(eps, classifier_logits(classifier), y=0, scale=10.0,
                               schedule=schedule)
    with torch.no_grad():
        seconds = median_seconds(lambda: guided(x, level), args.repeats)
    rows.append(("classifier-guided evaluation (UNet + classifier gradient)",
                 f"{seconds * 1e3:.0f} ms = {seconds / nfe:.2f} NFE"))

    simplex = median_seconds(
        lambda: simplex_noise(shape, level=level, frequency=args.size / 4), 10)
    rows.append((f"simplex noise, {args.batch}x1x{args.size}², 6 octaves",
                 f"{simplex * 1e3:.1f} ms ({args.batch / simplex:,.0f} images/s)"))

    config = TrainConfig(batch_size=args.batch, checkpoint_every=10**6)
    trainer = Trainer(build_unet(args.preset, 1), DiffusionObjective(schedule), config,
                      progress=False)
    data = ArrayDataset(torch.rand(256, 1, args.size, args.size))
    trainer.model.train()
    per_step = median_seconds(lambda: trainer.train_step(data), args.repeats)
    rows.append((f"training step, batch {args.batch} (forward + backward + AdamW + EMA)",
                 f"{per_step:.2f} s ({1 / per_step:.2f} steps/s)"))

    print(f"Preset `{args.preset}` UNet, {count_parameters(unet):,} parameters, "
          f"{args.size}² images; {platform.processor() or platform.machine()}, "
          f"{args.threads} threads, torch {torch.__version__}, {date.today()}\n")
    print("| what | time |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")


if __name__ == "__main__":
    main()
