"""Training losses: what one batch costs. The training loop itself is in :mod:`.training`.

An objective is a callable ``objective(model, batch, generator) -> loss`` that draws its
own randomness (levels, noise, label dropout) from ``generator`` so that a run is
reproducible and resumes exactly. ``batch`` holds ``image`` (N, C, ...), optionally
``label`` (N,) and ``cond`` (N, Cc, ...) — conditions concatenated to the noisy image.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from anodiff.diffusion.noise import draw_noise
from anodiff.diffusion.schedule import NoiseSchedule
from anodiff.errors import AnodiffError


def random_levels(
    n: int, max_level: int, generator: torch.Generator, device: torch.device
) -> Tensor:
    """Levels drawn uniformly from [1, max_level] (network timesteps 0 ... max_level - 1)."""
    return torch.randint(1, max_level + 1, (n,), generator=generator).to(device)


def random_boxes(shape: tuple[int, ...], side: int, generator: torch.Generator) -> Tensor:
    """(N, 1, H, W) bool masks of one ``side`` x ``side`` box per image of ``shape`` (N, C, H,
    W), placed uniformly at random inside the image (pDDPM's training patches)."""
    n, height, width = shape[0], shape[-2], shape[-1]
    if not 1 <= side <= min(height, width):
        raise AnodiffError(f"patch side must be in [1, {min(height, width)}], got {side}")
    top = torch.randint(0, height - side + 1, (n,), generator=generator)
    left = torch.randint(0, width - side + 1, (n,), generator=generator)
    rows, cols = torch.arange(height), torch.arange(width)
    inside_rows = (rows[None] >= top[:, None]) & (rows[None] < top[:, None] + side)
    inside_cols = (cols[None] >= left[:, None]) & (cols[None] < left[:, None] + side)
    return (inside_rows[:, :, None] & inside_cols[:, None, :])[:, None]


@dataclass(frozen=True)
class DiffusionObjective:
    """The denoising loss of review Eq. 4, and its common variants.

    * ``prediction="eps"``: ``||eps - eps_theta(x_l, l)||`` (Ho 2020);
      ``prediction="x0"``: the network predicts the clean image (pDDPM).
    * ``loss``: ``mse`` (Eq. 4) or ``l1``.
    * ``max_level``: levels are drawn from [1, max_level]; methods that only ever noise to
      L <= 400 need not learn the rest (AnoDDPM trains t < 800). Default: all T levels.
    * ``label_dropout``: probability of replacing the label by ``null_label``, which trains the
      unconditional model needed by classifier-free guidance (Ho & Salimans 2022).
    * ``noise``: ``gaussian`` or ``simplex`` (AnoDDPM), with ``noise_options``.
    * ``patch``: noise only one random ``patch`` x ``patch`` box per image and keep the rest
      clean as context; the loss counts the box's pixels only (pDDPM, Behrendt 2024a).
    """

    schedule: NoiseSchedule
    prediction: Literal["eps", "x0"] = "eps"
    loss: Literal["mse", "l1"] = "mse"
    max_level: int | None = None
    label_dropout: float = 0.0
    null_label: int | None = None
    noise: str = "gaussian"
    noise_options: dict[str, float] = field(default_factory=dict)
    patch: int | None = None

    def __post_init__(self) -> None:
        if self.patch is not None and self.patch < 1:
            raise AnodiffError(f"patch must be >= 1, got {self.patch}")
        if self.prediction not in ("eps", "x0"):
            raise AnodiffError(f"prediction must be 'eps' or 'x0', got {self.prediction!r}")
        if self.loss not in ("mse", "l1"):
            raise AnodiffError(f"loss must be 'mse' or 'l1', got {self.loss!r}")
        if self.label_dropout > 0 and self.null_label is None:
            raise AnodiffError("label_dropout > 0 needs a null_label (the 'no class' index)")
        if self.max_level is not None:
            self.schedule.check_level(self.max_level, "max_level")

    def __call__(self, model: nn.Module, batch: dict[str, Tensor], generator: torch.Generator
                 ) -> Tensor:
        x0 = batch["image"]
        n = x0.shape[0]
        level = random_levels(n, self.max_level or self.schedule.num_steps, generator, x0.device)
        noise = draw_noise(self.noise, tuple(x0.shape), level=level.cpu(), generator=generator,
                           dtype=x0.dtype, **self.noise_options).to(x0.device)
        x_t = self.schedule.q_sample(x0, level, noise)
        box = None
        if self.patch is not None:
            box = random_boxes(tuple(x0.shape), self.patch, generator).to(x0.device)
            x_t = torch.where(box, x_t, x0)
        if "cond" in batch:
            x_t = torch.cat([x_t, batch["cond"]], dim=1)
        label = batch.get("label")
        if label is not None and self.label_dropout > 0:
            drop = torch.rand(n, generator=generator).to(x0.device) < self.label_dropout
            label = torch.where(drop, torch.full_like(label, self.null_label), label)
        out = model(x_t, timesteps=level - 1, class_labels=label)
        target = noise if self.prediction == "eps" else x0
        if box is None:
            return F.mse_loss(out, target) if self.loss == "mse" else F.l1_loss(out, target)
        error = (out - target).square() if self.loss == "mse" else (out - target).abs()
        weight = box.expand_as(error).to(error.dtype)
        return (error * weight).sum() / weight.sum()

    def describe(self) -> dict[str, Any]:
        """JSON-friendly settings, stored in checkpoints."""
        settings = asdict(self)
        settings["schedule"] = self.schedule.to_dict()
        return {"objective": "diffusion", **settings}


@dataclass(frozen=True)
class ClassifierObjective:
    """Cross-entropy of a noise-aware classifier on ``q_sample``d inputs (Dhariwal & Nichol 2021).

    The classifier ``C(x_l, l)`` must recognise the class at every level it will guide, so
    inputs are noised to levels uniform in [1, max_level] (Wolleb: t uniform in [0, T)).
    """

    schedule: NoiseSchedule
    max_level: int | None = None

    def __call__(self, model: nn.Module, batch: dict[str, Tensor], generator: torch.Generator
                 ) -> Tensor:
        x0, label = batch["image"], batch["label"]
        level = random_levels(x0.shape[0], self.max_level or self.schedule.num_steps,
                              generator, x0.device)
        noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype).to(x0.device)
        logits = model(self.schedule.q_sample(x0, level, noise), timesteps=level - 1)
        return F.cross_entropy(logits, label)

    def describe(self) -> dict[str, Any]:
        """JSON-friendly settings, stored in checkpoints."""
        return {"objective": "noise_aware_classifier", "schedule": self.schedule.to_dict(),
                "max_level": self.max_level}


class FixedNoiseLoss:
    """A validation loss: the denoising loss (Eq. 4) on fixed images, levels and noise.

    Every call evaluates the same ``(x_l, l, eps)`` triples, so values are comparable across
    training and drawing them consumes no randomness of the training run (which is what
    keeps early stopping resumable). Levels are spread evenly over [1, ``max_level``] and
    assigned to the images in a seeded random order; ``cond`` (N, Cc, ...) is concatenated
    to the noisy images, as in :class:`DiffusionObjective`. Inputs are in the model's range.
    """

    def __init__(
        self,
        schedule: NoiseSchedule,
        images: Tensor,
        cond: Tensor | None = None,
        *,
        prediction: Literal["eps", "x0"] = "eps",
        max_level: int | None = None,
        seed: int = 0,
        batch_size: int = 64,
    ) -> None:
        if len(images) == 0:
            raise AnodiffError("FixedNoiseLoss: no validation images")
        if cond is not None and len(cond) != len(images):
            raise AnodiffError(f"FixedNoiseLoss: {len(images)} images but {len(cond)} conditions")
        if prediction not in ("eps", "x0"):
            raise AnodiffError(f"prediction must be 'eps' or 'x0', got {prediction!r}")
        top = schedule.check_level(max_level or schedule.num_steps, "max_level")
        if top < 1:
            raise AnodiffError("FixedNoiseLoss: max_level must be >= 1")
        generator = torch.Generator().manual_seed(seed)
        n = len(images)
        spread = torch.linspace(1, top, n).round().long()
        self.levels = spread[torch.randperm(n, generator=generator)]
        self.noise = torch.randn(images.shape, generator=generator, dtype=images.dtype)
        self.noisy = schedule.q_sample(images, self.levels, self.noise)
        self.target = self.noise if prediction == "eps" else images
        self.cond, self.batch_size = cond, batch_size

    def __call__(self, model: nn.Module) -> float:
        """Mean squared error of ``model``'s predictions over all validation pixels."""
        device = next(model.parameters()).device
        total = 0.0
        with torch.no_grad():
            for rows in torch.arange(len(self.levels)).split(self.batch_size):
                x = self.noisy[rows]
                if self.cond is not None:
                    x = torch.cat([x, self.cond[rows]], dim=1)
                out = model(x.to(device), timesteps=(self.levels[rows] - 1).to(device))
                total += float(F.mse_loss(out, self.target[rows].to(device), reduction="sum"))
        return total / self.target.numel()
