"""Memory of latent against pixel diffusion, in 2-D and 3-D (issue 22: the memory route to volumes).

Pinaya et al. 2022a run the diffusion model on an autoencoder's latents so that a brain
volume fits in memory. This measures what that buys with the networks ``ldm``'s cpu preset
builds, for one training step (forward, backward, Adam update) at the preset's batch sizes:

* ``pixel``: the pixel-space DDPM (the ``cpu`` UNet on the (3, S, S[, S]) image, as
  ``anoddpm``), batch 16;
* ``autoencoder``: the KL autoencoder (MONAI ``AutoencoderKL``, channels (32, 64, 64),
  latent 3 channels at S/4), batch 32 in 2-D;
* ``latent``: the same ``cpu`` UNet on the (3, S/4, ...) latents, batch 16;
* ``inference``: encode, 25 evaluations of the latent UNet, decode a batch of 32 without
  gradients (the shape of ``ldm``'s test pass; ``parameters`` is the autoencoder's).

Each measurement runs in its own fresh process (``--child``); the figure is the peak
resident memory during the step minus the resident memory after the networks and the batch
were built (what the step itself needs: activations, gradients, optimiser state), and the
step's wall time. 3-D uses the same layouts with ``spatial_dims=3`` and batch 1 or 2 (a
volume is one sample). CPU memory, not GPU memory: the GPU figure for the same step is of the
same order (activations dominate), but only a GPU run can say; none was lent to this task.

Run alone on the machine::

    .venv/bin/python benchmarks/ldm_memory.py --out benchmarks/results/issue22_ldm_memory.csv
"""

from __future__ import annotations

import argparse
import csv
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

CASES: tuple[tuple[str, int, int, int], ...] = (
    # (what, spatial dims, side, batch)
    ("pixel", 2, 64, 16), ("autoencoder", 2, 64, 32), ("latent", 2, 64, 16),
    ("inference", 2, 64, 32),
    ("pixel", 2, 128, 16), ("autoencoder", 2, 128, 32), ("latent", 2, 128, 16),
    ("inference", 2, 128, 32),
    ("pixel", 3, 64, 1), ("autoencoder", 3, 64, 1), ("latent", 3, 64, 1),
    ("autoencoder", 3, 128, 1), ("latent", 3, 128, 1),
)


def rss_mib() -> float:
    """Peak resident memory of this process so far, MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mib() -> float:
    """Resident memory now, MiB (from /proc, Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def measure(what: str, dims: int, side: int, batch: int) -> dict[str, float | int | str]:
    """One training (or inference) step of ``what``; runs in a fresh process."""
    import torch
    from monai.networks.nets import AutoencoderKL

    from anodiff.methods.ldm import LDM
    from anodiff.nets.builders import build_unet

    torch.manual_seed(0)
    torch.set_num_threads(2)
    part = LDM.presets["cpu"].autoencoder  # the preset's layout, in 2-D or 3-D
    autoencoder = AutoencoderKL(
        spatial_dims=dims, in_channels=3, out_channels=3, num_res_blocks=part.num_res_blocks,
        channels=part.channels, attention_levels=(False,) * len(part.channels),
        latent_channels=part.latent_channels, norm_num_groups=part.norm_num_groups,
        with_encoder_nonlocal_attn=False, with_decoder_nonlocal_attn=False)
    image = torch.rand(batch, 3, *([side] * dims)) * 2 - 1
    latent = torch.randn(batch, 3, *([side // 4] * dims))
    timesteps = torch.randint(0, 400, (batch,))
    net = build_unet("cpu", 3, spatial_dims=dims) if what in ("pixel", "latent") else autoencoder
    denoiser = build_unet("cpu", 3, spatial_dims=dims) if what == "inference" else None
    parameters = sum(p.numel() for p in net.parameters())
    optimiser = torch.optim.Adam(net.parameters(), lr=1e-4) if what != "inference" else None
    before = current_rss_mib()
    start = time.perf_counter()
    if what == "inference":
        assert denoiser is not None
        with torch.no_grad():
            z = autoencoder.encode(image)[0]
            for _ in range(25):
                z = z - 0.01 * denoiser(z, timesteps)
            autoencoder.decode(z)
    else:
        assert optimiser is not None
        if what == "autoencoder":
            recon, mu, sigma = net(image)
            loss = (recon - image).abs().mean() + 1e-6 * (mu.square() + sigma.square()).mean()
        else:
            source = image if what == "pixel" else latent
            loss = net(source, timesteps).square().mean()
        loss.backward()
        optimiser.step()
    seconds = time.perf_counter() - start
    return {"what": what, "dims": dims, "side": side, "batch": batch,
            "parameters": parameters, "baseline_mib": round(before, 1),
            "step_mib": round(rss_mib() - before, 1), "seconds": round(seconds, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="CSV to write")
    parser.add_argument("--child", nargs=4, metavar=("WHAT", "DIMS", "SIDE", "BATCH"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        what, dims, side, batch = args.child
        print(json.dumps(measure(what, int(dims), int(side), int(batch))))
        return
    rows = []
    for what, dims, side, batch in CASES:
        done = subprocess.run(
            [sys.executable, __file__, "--out", str(args.out), "--child", what, str(dims),
             str(side), str(batch)], capture_output=True, text=True, check=False)
        if done.returncode != 0:
            print(f"{what} {dims}-D {side}: failed: {done.stderr.strip().splitlines()[-1:]}")
            continue
        row = json.loads(done.stdout.strip().splitlines()[-1])
        print(row, flush=True)
        rows.append(row)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
