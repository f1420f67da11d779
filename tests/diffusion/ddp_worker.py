"""Started by ``torchrun`` (or plainly, as one process) from ``test_distributed.py``: trains
a small convolution with the shared :class:`~anodiff.diffusion.training.Trainer` on a fixed
regression problem and writes the trained weights (the main process).

``--noise`` adds generator noise to the inputs (so exact resume needs every process's saved
random state); ``--kill-at K`` makes process 1 kill itself (SIGKILL, no clean-up) when it
starts step K, as a crashed node would; ``--settings-of-rank`` gives process 1 another
learning rate, as a node launched with another command would have.
"""

import argparse
import os
import signal
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from anodiff.diffusion.distributed import check_same_settings, joined
from anodiff.diffusion.training import ArrayDataset, TrainConfig, Trainer


def problem() -> ArrayDataset:
    """64 random 8 x 8 images and their targets under a fixed 3 x 3 filter."""
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(64, 1, 8, 8, generator=generator)
    kernel = torch.randn(1, 1, 3, 3, generator=generator)
    return ArrayDataset(images, cond=nn.functional.conv2d(images, kernel, padding=1))


class Regression:
    """Mean squared error of the network's output against the target, on inputs with
    optional generator noise; process 1 dies at step ``kill_at``."""

    def __init__(self, noise: float, kill_at: int | None) -> None:
        self.noise, self.kill_at, self.calls = noise, kill_at, 0

    def __call__(self, model: nn.Module, batch: dict[str, torch.Tensor],
                 generator: torch.Generator) -> torch.Tensor:
        if self.kill_at is not None and os.environ.get("RANK") == "1" and \
                self.calls == self.kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        self.calls += 1
        x = batch["image"]
        if self.noise:
            x = x + self.noise * torch.randn(x.shape, generator=generator)
        return ((model(x) - batch["cond"]) ** 2).mean()


def train(out: Path, steps: int = 6, batch: int = 8, noise: float = 0.0,
          kill_at: int | None = None, settings_of_rank: bool = False) -> None:
    """Train in the launcher's world (one process without one); the main process writes
    the weights, the EMA weights and the losses into ``out``."""
    with joined(torch.device("cpu")) as (world, device):
        lr = 0.05 if settings_of_rank and world.rank == 1 else 0.01
        check_same_settings({"lr": lr, "steps": steps}, world)
        torch.manual_seed(1)
        net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.Tanh(), nn.Conv2d(4, 1, 1))
        config = TrainConfig(steps=steps, batch_size=batch, lr=lr, warmup_steps=0,
                             checkpoint_every=2, ema_decay=0.9, seed=3)
        trainer = Trainer(net.to(device), Regression(noise, kill_at), config, out / "run",
                          progress=False)
        history = trainer.fit(problem())
        if world.main:
            save_file({k: v.contiguous() for k, v in net.state_dict().items()},
                      out / "weights.safetensors")
            save_file({k: v.contiguous() for k, v in trainer.ema.model.state_dict().items()},
                      out / "ema.safetensors")
            (out / "losses.txt").write_text("\n".join(f"{loss!r}" for loss in history.losses))


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--noise", type=float, default=0.0)
    parser.add_argument("--kill-at", type=int)
    parser.add_argument("--settings-of-rank", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    train(args.out, args.steps, args.batch, args.noise, args.kill_at, args.settings_of_rank)
