"""``ddpm-features``: label-efficient segmentation from a diffusion model's features
(the review Sec. 5.2; Baranchuk et al. 2021).

Baranchuk, Rubachev, Voynov, Khrulkov & Babenko ("Label-Efficient Semantic Segmentation
with Diffusion Models", ICLR 2022; arXiv 2021) show that a DDPM trained without labels is a
representation learner: the activations of its UNet's decoder, read while it denoises a
slightly noised image, describe each pixel well enough that a small per-pixel classifier
trained on a handful of annotated images segments well. The semi-supervised regime of the
review (Sec. 5.2) in its plainest form:

1. train a DDPM (review Eq. 4) on **every** train-split slice, lesioned or not, without
   labels or masks (the design brief's semi regime: masks withheld except ``labelled``);
2. for a slice ``x``, at each of ``feature_levels`` (Baranchuk: t = 50, 150, 250 of 1000)
   noise it once, ``x_t = sqrt(abar_t) x + sqrt(1 - abar_t) eps``, evaluate the UNet and
   keep the output of every decoder (up) block, upsampled bilinearly to the slice's size:
   one feature vector per pixel, the levels' features concatenated;
3. train a small pixel head (1x1 convolutions with ReLU and batch norm: Baranchuk's MLP,
   applied at every pixel) on the features of exactly ``labelled`` slices with their masks,
   with the Dice + cross-entropy loss of the ``unet`` baseline, so that the two differ only
   in where their features come from.

The map is the head's lesion probability, the own mask "probability reaches
``probability``"; NFE per slice = the number of feature levels. The head trains in
:meth:`DDPMFeatures.fit_normality`, so ``anodiff export RUN --set labelled=K --refit DATA``
trains a head on K other labelled slices in about a minute without retraining the DDPM
(how the label-efficiency curve is measured). What differs from the paper: Baranchuk
averages an ensemble of 10 MLPs and picks blocks per dataset; here one head reads every
decoder block of the project's small UNet.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from anodiff.diffusion.distributed import current_world
from anodiff.diffusion.schedule import NoiseSchedule
from anodiff.diffusion.seeding import seeded
from anodiff.diffusion.training import ArrayDataset, TrainConfig, Trainer
from anodiff.errors import AnodiffError
from anodiff.methods.base import Detector, MaskTrainedConfig
from anodiff.methods.parts import (
    DiffusionPart,
    SegmentationObjective,
    build_diffusion_unet,
    train_diffusion_unet,
)
from anodiff.methods.registry import register
from anodiff.methods.results import RawResult
from anodiff.methods.training_data import LabelledSlices, labelled_training_data
from anodiff.nets.builders import net_config
from anodiff.outputs import write_text_atomic

log = logging.getLogger(__name__)

LABELLED_RECORD = "labelled_slices.csv"  # in the run folder: which slices' masks were used


@dataclass(frozen=True)
class HeadPart:
    """The pixel head: hidden widths of its 1x1 convolutions, and its training."""

    widths: tuple[int, ...] = (64, 32)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        steps=1000, batch_size=8, lr=1e-3, warmup_steps=20, ema_decay=None))

    def __post_init__(self) -> None:
        if not self.widths or any(w < 1 for w in self.widths):
            raise AnodiffError(f"head widths must be positive, got {list(self.widths)}")


@dataclass(frozen=True)
class DDPMFeaturesConfig(MaskTrainedConfig):
    """The unlabelled DDPM, the levels its features are read at, the head, and how many
    labelled slices the head may learn from (``labelled``, k; ``label_seed`` picks them)."""

    diffusion: DiffusionPart = field(default_factory=lambda: DiffusionPart(
        net="cpu", num_steps=1000, max_level=250))
    feature_levels: tuple[int, ...] = (50, 150, 250)
    head: HeadPart = field(default_factory=HeadPart)
    labelled: int | None = 20
    mask: Literal["otsu", "healthy_fpr", "own"] = "own"

    def check(self) -> None:
        super().check()
        if self.labelled is None:
            raise AnodiffError("ddpm-features is semi-supervised: labelled must be the number "
                               "of slices whose masks the head learns from")
        top = self.diffusion.max_level or self.diffusion.num_steps
        levels = self.feature_levels
        if not levels or len(set(levels)) != len(levels) or not all(1 <= v <= top
                                                                     for v in levels):
            raise AnodiffError(f"feature_levels must be distinct levels in [1, {top}] (the "
                               f"levels the DDPM learns), got {list(levels)}")


def pixel_head(features: int, widths: tuple[int, ...]) -> nn.Sequential:
    """Baranchuk's pixel MLP as 1x1 convolutions: (linear, ReLU, batch norm) per hidden
    width, then one logit per pixel."""
    layers: list[nn.Module] = []
    for width in widths:
        layers += [nn.Conv2d(features, width, 1), nn.ReLU(), nn.BatchNorm2d(width)]
        features = width
    return nn.Sequential(*layers, nn.Conv2d(features, 1, 1))


def decoder_features(unet: nn.Module, schedule: NoiseSchedule, x: Tensor,
                     levels: tuple[int, ...], generator: torch.Generator) -> Tensor:
    """Pixel features (N, F, H, W) of images ``x`` in the model's range: at every level,
    ``x`` noised with a fresh draw from ``generator``, the output of each up block of the
    MONAI ``DiffusionModelUNet``, upsampled bilinearly to H x W; levels and blocks
    concatenated in order."""
    captured: list[Tensor] = []
    hooks = [block.register_forward_hook(lambda _m, _i, out: captured.append(out))
             for block in unet.up_blocks]
    try:
        for level in levels:
            noise = torch.randn(x.shape, generator=generator).to(x.device, x.dtype)
            at = torch.full((len(x),), level, dtype=torch.long, device=x.device)
            unet(schedule.q_sample(x, at, noise), timesteps=at - 1)
    finally:
        for hook in hooks:
            hook.remove()
    return torch.cat([F.interpolate(f.contiguous(), size=tuple(x.shape[-2:]), mode="bilinear",
                                    align_corners=False) for f in captured], dim=1)


@register("ddpm-features")
class DDPMFeatures(Detector[DDPMFeaturesConfig]):
    supervision = "semi"
    description = "pixel head on k labelled slices over a DDPM's decoder features, the DDPM " \
                  "trained on every unlabelled slice (Baranchuk 2021)"
    counted = ("unet",)
    state_free_settings = frozenset({"probability"})
    presets = {
        "quick": DDPMFeaturesConfig(
            diffusion=DiffusionPart(net="quick", num_steps=100, max_level=30, train=TrainConfig(
                steps=60, batch_size=8, lr=3e-3, warmup_steps=5, ema_decay=None)),
            feature_levels=(5, 15), head=HeadPart(widths=(16,), train=TrainConfig(
                steps=60, batch_size=4, lr=3e-3, warmup_steps=5, ema_decay=None)),
            labelled=8, calibration_images=16),
        # 1000 DDPM steps of batch 16 (~13 min on 2 cores) on levels <= 250 (the features
        # are read at 50, 150, 250 only), then 1000 head steps (about a minute).
        "cpu": DDPMFeaturesConfig(),
        # Already fast: one network evaluation per feature level, 3 per slice.
        "fast": DDPMFeaturesConfig(),
        # Baranchuk's setting: the guided-diffusion UNet, every level trained.
        "paper": DDPMFeaturesConfig(
            diffusion=DiffusionPart(net="paper", num_steps=1000, train=TrainConfig(
                steps=100_000, batch_size=16, lr=1e-4, warmup_steps=0, ema_decay=0.9999,
                checkpoint_every=5000)),
            head=HeadPart(widths=(256, 128), train=TrainConfig(
                steps=5000, batch_size=8, lr=1e-3, warmup_steps=0, ema_decay=None))),
    }

    def __init__(self, config: DDPMFeaturesConfig) -> None:
        super().__init__(config)
        self.schedule = config.diffusion.noise_schedule()
        # How many labelled slices the head was trained on (0: no head trained yet).
        self.register_buffer("head_labelled", torch.tensor(0))

    @property
    def feature_count(self) -> int:
        """Features per pixel: every up block's output channels (the UNet's channels in
        reverse), at each feature level."""
        return sum(net_config(self.config.diffusion.net).channels) * \
            len(self.config.feature_levels)

    def build(self, input_shape: tuple[int, ...]) -> None:
        super().build(input_shape)
        with seeded(self.config.seed):
            self.unet = build_diffusion_unet(self.config.diffusion, self.input_shape[0])
            self.head = pixel_head(self.feature_count, self.config.head.widths)

    def fitted_state(self) -> bool:
        return bool(self.head_labelled > 0)

    def labelled_data(self, data: Any) -> LabelledSlices:
        """What the semi regime gives this method: every train slice, ``labelled`` masks."""
        assert self.config.labelled is not None  # refused at construction otherwise
        return labelled_training_data(self.name, data, self.config.labelled,
                                      self.config.label_seed)

    def fit_parts(self, data: Any) -> None:
        """Train the DDPM on every train slice without labels (checkpoints under
        ``run_dir/unet``), then the head (:meth:`fit_normality`)."""
        picked = self.labelled_data(data)
        self.prepare(tuple(picked.images.shape[1:]))
        self.unet = train_diffusion_unet(self.unet, self.config.diffusion,
                                         picked.images * 2 - 1, run_dir=self.run_dir,
                                         name="unet")
        self.fit_head(picked)

    def fit_normality(self, data: Any) -> None:
        """Train a new head for the current ``labelled`` / ``label_seed`` (:meth:`fit_head`)."""
        self.fit_head(self.labelled_data(data))

    def fit_head(self, picked: LabelledSlices) -> None:
        """Train a new head on the features of the labelled slices (seeded noise) and record
        which slices they are (the log, and ``RUN/labelled_slices.csv``)."""
        images = picked.images[picked.rows].to(self.device)
        generator = torch.Generator().manual_seed(self.config.seed)
        with torch.no_grad():
            features = torch.cat([self.features(chunk, generator).cpu()
                                  for chunk in images.split(self.config.batch_size)])
        with seeded(self.config.seed):
            head = pixel_head(self.feature_count, self.config.head.widths).to(self.device)
        trainer = Trainer(head, SegmentationObjective(), self.config.head.train, None,
                          {"part": "head"})
        trainer.fit(ArrayDataset(features, masks=picked.masks))
        self.head = trainer.inference_model.eval()
        self.head_labelled.fill_(len(picked.rows))
        log.info("%s: head trained on %d labelled slices (label_seed %d): %s", self.name,
                 len(picked.rows), self.config.label_seed, ", ".join(picked.names))
        if self.run_dir is not None and current_world().main:  # one writer under torchrun
            write_text_atomic(self.run_dir / LABELLED_RECORD,
                              "slice\n" + "".join(f"{name}\n" for name in picked.names))

    def features(self, x: Tensor, generator: torch.Generator) -> Tensor:
        """The pixel features of images ``x`` in [0, 1] (:func:`decoder_features`)."""
        return decoder_features(self.unet, self.schedule, x * 2 - 1,
                                self.config.feature_levels, generator)

    def step(self, x: Tensor, generator: torch.Generator) -> RawResult:
        """The head's lesion probability from the features at every feature level (one
        network evaluation per level)."""
        logits = self.head(self.features(x, generator))
        return RawResult(anomaly_map=torch.sigmoid(logits)[:, 0],
                         nfe=len(self.config.feature_levels))

    def own_mask(self, maps: Tensor, fg: Tensor, raw: RawResult) -> Tensor:
        """Pixels whose lesion probability reaches ``probability``, inside the foreground."""
        return (maps >= self.config.probability) & fg
