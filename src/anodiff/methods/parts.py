"""Trained parts shared by the methods: a noise predictor, a noise-aware classifier, and the
segmentation loss of the methods that learn from masks.

A method's config holds a :class:`DiffusionPart` (network preset, schedule, training) and,
if it needs one, a :class:`ClassifierPart`; the functions here build and train them with the
engine's loop on the device the network is on, each part checkpointing into
``run_dir/<part name>/checkpoints`` so that an interrupted ``anodiff train`` resumes every
part where it stopped.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from monai.losses import DiceCELoss
from torch import Tensor, nn

from anodiff.diffusion.objectives import DiffusionObjective
from anodiff.diffusion.schedule import NoiseSchedule
from anodiff.diffusion.training import (
    ArrayDataset,
    SampleSource,
    TrainConfig,
    Trainer,
    Validation,
    train_noise_aware_classifier,
)
from anodiff.errors import AnodiffError
from anodiff.nets.builders import NET_PRESETS, build_unet


@dataclass(frozen=True)
class DiffusionPart:
    """A diffusion model: network preset, noise schedule, what it learns and how long."""

    net: Literal["quick", "small", "cpu", "invdetect", "paper"] = "cpu"
    schedule: Literal["linear", "cosine"] = "linear"
    num_steps: int = 1000  # T
    max_level: int | None = None  # train levels in [1, max_level] (all when None)
    prediction: Literal["eps", "x0"] = "eps"
    loss: Literal["mse", "l1"] = "mse"
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        steps=1000, batch_size=16, lr=1e-3, warmup_steps=50, ema_decay=0.995))

    def __post_init__(self) -> None:
        check_network(self.net, NET_PRESETS)
        if self.num_steps < 1:
            raise AnodiffError(f"num_steps (T) must be >= 1, got {self.num_steps}")
        check_max_level(self.max_level, self.num_steps)
        if self.prediction not in ("eps", "x0") or self.loss not in ("mse", "l1"):
            raise AnodiffError(f"prediction must be eps or x0 and loss mse or l1, got "
                               f"{self.prediction!r} and {self.loss!r}")

    def noise_schedule(self) -> NoiseSchedule:
        return NoiseSchedule.create(self.schedule, self.num_steps)


@dataclass(frozen=True)
class ClassifierPart:
    """A noise-aware classifier C(y | x_l, l) (the encoder half of the UNet)."""

    net: Literal["quick", "cpu", "paper"] = "cpu"
    max_level: int | None = None  # the highest level it must classify (guidance range)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        steps=500, batch_size=32, lr=1e-3, warmup_steps=20, ema_decay=None))

    def __post_init__(self) -> None:
        check_network(self.net, ("quick", "cpu", "paper"))
        check_max_level(self.max_level, None)


@dataclass(frozen=True)
class StudentPart:
    """A few-step student of a method's decoder, made by ``anodiff distill``
    (:mod:`anodiff.diffusion.distillation`): it decodes from ``level`` in ``steps`` DDIM hops,
    the segment it was distilled on."""

    steps: int
    level: int

    def __post_init__(self) -> None:
        if self.steps < 1 or self.level < self.steps:
            raise AnodiffError(f"student: {self.steps} hops from level {self.level} is no "
                               "decoder; distil again")


def check_network(net: str, presets: Iterable[str]) -> None:
    """Refuse a network preset that does not exist."""
    if net not in presets:
        raise AnodiffError(f"net must be one of {sorted(presets)}, got {net!r}")


def check_max_level(max_level: int | None, num_steps: int | None) -> None:
    """Refuse a training range outside [1, T] (T unknown: only the lower bound)."""
    if max_level is None:
        return
    if max_level < 1 or (num_steps is not None and max_level > num_steps):
        raise AnodiffError(f"max_level must be in [1, {num_steps or 'T'}] or null, got "
                           f"{max_level}")


def check_sampling_from_noise(part: DiffusionPart, solver: str, steps: int, eta: float,
                              what: str) -> None:
    """Refuse settings a method that generates ``what`` from pure noise at level T cannot
    use: a model not trained on every level, an unknown solver, no steps, negative eta."""
    if part.max_level not in (None, part.num_steps):
        raise AnodiffError(f"{what} is generated from pure noise at level T, so the model must "
                           "learn every level (diffusion.max_level: null)")
    if solver not in ("ddpm", "ddim", "dpmpp2m"):
        raise AnodiffError(f"solver must be ddpm, ddim or dpmpp2m, got {solver!r}")
    if steps < 1 or not eta >= 0:
        raise AnodiffError(f"need steps >= 1 and eta >= 0, got {steps} and {eta}")


def _part_dir(run_dir: Path | None, name: str) -> Path | None:
    return None if run_dir is None else Path(run_dir) / name


def build_diffusion_unet(part: DiffusionPart, channels: int, *, cond_channels: int = 0,
                         num_class_embeds: int | None = None) -> nn.Module:
    """The (untrained) noise predictor of ``part`` for ``channels``-channel images."""
    return build_unet(part.net, channels, cond_channels=cond_channels,
                      num_class_embeds=num_class_embeds)


def train_diffusion_unet(
    net: nn.Module, part: DiffusionPart, images: Tensor | SampleSource, *,
    labels: Tensor | None = None, cond: Tensor | None = None, label_dropout: float = 0.0,
    null_label: int | None = None, noise: str = "gaussian",
    noise_options: dict[str, float] | None = None, validation: Validation | None = None,
    run_dir: Path | None = None, name: str = "unet", progress: bool = True,
    patch: int | None = None,
) -> nn.Module:
    """Train ``net`` with the denoising loss (review Eq. 4); returns its EMA copy (the best
    validated one when ``validation`` is given, see :class:`Trainer`). ``patch``: noise one
    random box of that side per image only (pDDPM; :class:`DiffusionObjective`).

    ``images`` is a tensor (with optional ``labels`` and ``cond``) or any sample source
    whose items hold ``image`` (and ``label`` / ``cond``), e.g. pairs made on demand.
    """
    objective = DiffusionObjective(
        part.noise_schedule(), prediction=part.prediction, loss=part.loss,
        max_level=part.max_level, label_dropout=label_dropout, null_label=null_label,
        noise=noise, noise_options=noise_options or {}, patch=patch)
    trainer = Trainer(net, objective, part.train, _part_dir(run_dir, name),
                      {"part": name, "net": part.net}, progress, validation)
    data = ArrayDataset(images, labels, cond) if isinstance(images, Tensor) else images
    trainer.fit(data)
    return trainer.final_model().eval()


def train_classifier(
    net: nn.Module, part: ClassifierPart, schedule: NoiseSchedule, images: Tensor,
    labels: Tensor, *, run_dir: Path | None = None, name: str = "classifier",
    progress: bool = True,
) -> nn.Module:
    """Train the noise-aware classifier ``net`` on ``q_sample``d images (cross-entropy)."""
    trained, _ = train_noise_aware_classifier(
        net, ArrayDataset(images, labels), schedule, part.train, max_level=part.max_level,
        run_dir=_part_dir(run_dir, name), description={"part": name, "net": part.net},
        progress=progress)
    return trained.eval()


@dataclass(frozen=True)
class SegmentationObjective:
    """Dice + binary cross-entropy of a segmentation network's logit map against the lesion
    mask, the Dice over the whole batch (MONAI ``DiceCELoss(sigmoid=True, batch=True)``)."""

    def __call__(self, model: nn.Module, batch: dict[str, Tensor], generator: torch.Generator
                 ) -> Tensor:
        logits = model(batch["image"])
        target = batch["mask"][:, None].to(logits.dtype)
        return DiceCELoss(sigmoid=True, batch=True)(logits, target)

    def describe(self) -> dict[str, Any]:
        return {"objective": "dice_ce", "output": "sigmoid", "dice_over": "batch"}
