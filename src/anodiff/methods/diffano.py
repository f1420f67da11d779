"""``diffano``: DDIM noise encoding + classifier-guided decoding (Wolleb et al. 2022).

Weakly supervised (review Sec. 5.3, "Gradient Guidance"). Training uses every train slice
with its image label (1 = anomalous) and no masks:

* a class-conditional DDPM ``eps_theta(x_l, l, y)`` trained with the loss of Eq. 4;
* a noise-aware classifier ``C(y | x_l, l)`` (the UNet's encoder half) trained with
  cross-entropy on ``q_sample``d inputs (Eq. 2), levels uniform in its training range.

Localisation is Algorithm 1:

1. lines 1-3 — encode ``x`` to ``x_L`` with DDIM (Eq. 6), *without* guidance;
2. lines 4-7 — decode ``x_L`` back to ``x_hat`` with
   ``eps_hat = eps_theta(x_l, l) - s sqrt(1 - abar_l) grad log C(h | x_l, l)``, steering
   toward the healthy class ``h``;
3. line 8 — ``a = sum_channels |x - x_hat|``; the mask is each map's Otsu threshold.

The paper's Algorithm 1 does not say which class the class-conditional model is given;
Wolleb's code conditions it on the healthy label in both the encoding and the decoding, and
so does this module. NFE counts evaluations of the diffusion network only (encoding +
decoding steps); each decoding step also runs the classifier forward and backward.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from anodiff.diffusion.guidance import (
    EpsFn,
    class_conditioned,
    classifier_guided,
    classifier_logits,
    unet_eps,
)
from anodiff.diffusion.training import TrainConfig
from anodiff.errors import AnodiffError
from anodiff.methods.base import register
from anodiff.methods.parts import (
    ClassifierPart,
    DiffusionPart,
    build_diffusion_unet,
    train_classifier,
    train_diffusion_unet,
)
from anodiff.methods.translation import (
    TranslationConfig,
    TranslationDetector,
    check_translation,
    labelled_training_images,
)
from anodiff.nets.builders import build_classifier

NUM_CLASSES = 2  # 0 = healthy, 1 = anomalous


@dataclass(frozen=True)
class DiffAnoConfig(TranslationConfig):
    """Wolleb's method: the translation settings plus the gradient scale and the two parts.

    ``scale`` is s of Algorithm 1 (0 = no guidance: a plain DDIM round trip). The defaults
    are the ``cpu`` preset: 64² images, T = 1000, both parts trained on levels <= 500 only
    (the decoding never guides above L), L = 100 and s = 100 with DPM-Solver++(2M) 10 + 10
    steps — the best of an L x s grid on the tumour track (docs/BENCHMARKS.md).
    """

    level: int = 100
    scale: float = 100.0
    diffusion: DiffusionPart = field(default_factory=lambda: DiffusionPart(
        net="cpu", num_steps=1000, max_level=500, train=TrainConfig(
            steps=900, batch_size=16, lr=1e-3, warmup_steps=50, ema_decay=0.995)))
    classifier: ClassifierPart = field(default_factory=lambda: ClassifierPart(
        net="cpu", max_level=500, train=TrainConfig(
            steps=2000, batch_size=16, lr=1e-3, warmup_steps=20, ema_decay=None)))


@register("diffano")
class DiffAno(TranslationDetector):
    supervision = "weak"
    description = "DDIM noise encoding + classifier-guided decoding to healthy (Wolleb 2022)"
    presets = {
        "quick": DiffAnoConfig(
            level=50, steps=10, solver="ddim", scale=100.0, batch_size=64,
            diffusion=DiffusionPart(net="quick", num_steps=100, train=TrainConfig(
                steps=60, batch_size=16, lr=3e-3, warmup_steps=5, ema_decay=None)),
            classifier=ClassifierPart(net="quick", train=TrainConfig(
                steps=60, batch_size=16, lr=3e-3, warmup_steps=5, ema_decay=None))),
        "cpu": DiffAnoConfig(),
        # Paper: L = 500, s = 100, DDIM over every level (500 + 500 steps), Adam lr 1e-4,
        # batch 10, 50,000 UNet / 20,000 classifier iterations, EMA 0.9999.
        "paper": DiffAnoConfig(
            level=500, steps=500, solver="ddim", scale=100.0, batch_size=10,
            diffusion=DiffusionPart(net="paper", num_steps=1000, train=TrainConfig(
                steps=50_000, batch_size=10, lr=1e-4, warmup_steps=0, ema_decay=0.9999,
                checkpoint_every=1000)),
            classifier=ClassifierPart(net="paper", train=TrainConfig(
                steps=20_000, batch_size=10, lr=1e-4, warmup_steps=0, ema_decay=None,
                checkpoint_every=1000))),
    }

    def __init__(self, config: DiffAnoConfig) -> None:
        super().__init__(config)
        self.schedule = config.diffusion.noise_schedule()
        check_translation(self.name, config, self.schedule, {
            "diffusion": config.diffusion.max_level, "classifier": config.classifier.max_level})
        if config.scale < 0:
            raise AnodiffError(f"{self.name}: scale (s) must be >= 0, got {config.scale}")
        self.unet: nn.Module | None = None
        self.classifier: nn.Module | None = None

    def condition_channels(self, channels: int) -> int:
        """Channels concatenated to the noisy image (none; FNDM adds its conditions)."""
        return 0

    def build(self, input_shape: tuple[int, ...]) -> None:
        super().build(input_shape)
        channels, *size = self.input_shape
        self.unet = build_diffusion_unet(self.config.diffusion, channels,
                                         num_class_embeds=NUM_CLASSES,
                                         cond_channels=self.condition_channels(channels))
        self.classifier = build_classifier(self.config.classifier.net, channels, NUM_CLASSES,
                                           tuple(size))

    def networks(self) -> dict[str, nn.Module]:
        if self.unet is None or self.classifier is None:
            return {}
        return {"unet": self.unet, "classifier": self.classifier}

    def fit(self, data: Any) -> None:
        """Train the class-conditional UNet and the noise-aware classifier on all labelled
        train slices (each part checkpoints under ``run_dir/unet`` / ``run_dir/classifier``)."""
        images, labels = labelled_training_images(self.name, data)
        torch.manual_seed(self.config.diffusion.train.seed)
        self.build(tuple(images.shape[1:]))
        assert self.unet is not None
        self.unet = train_diffusion_unet(self.unet, self.config.diffusion, images,
                                         labels=labels, run_dir=self.run_dir, name="unet")
        self.classifier = train_classifier(self.config.classifier, self.schedule, images,
                                           labels, NUM_CLASSES, run_dir=self.run_dir,
                                           name="classifier")

    def conditioned(self, x: Tensor) -> EpsFn:
        """The UNet at the healthy label (FNDM also concatenates conditions made from ``x``)."""
        assert self.unet is not None
        return class_conditioned(unet_eps(self.unet), y=self.config.healthy_label)

    def predictors(self, x: Tensor) -> tuple[EpsFn, EpsFn]:
        """Algorithm 1's two noise predictors: unguided for encoding, guided for decoding.

        Both condition the UNet on ``healthy_label`` (as Wolleb's code does); the decoder
        adds the classifier gradient toward it with scale s (skipped when s = 0).
        """
        assert self.unet is not None and self.classifier is not None
        healthy_label = self.config.healthy_label
        conditioned = self.conditioned(x)
        if self.config.scale == 0:
            return conditioned, conditioned
        guided = classifier_guided(conditioned, classifier_logits(self.classifier),
                                   y=healthy_label, scale=self.config.scale,
                                   schedule=self.schedule)
        return conditioned, guided
