"""``diffano``: DDIM noise encoding + classifier-guided decoding (Wolleb 2022).

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
3. line 8 — ``a = sum_channels |x - x_hat|``; the mask is each map's Otsu threshold (the
   shared pipeline's ``otsu`` rule, Wolleb's Dice protocol).

The paper's Algorithm 1 does not say which class the class-conditional model is given;
Wolleb's code conditions it on the healthy label in both the encoding and the decoding, and
so does this module. NFE counts evaluations of the diffusion network only (encoding +
decoding steps); each decoding step also runs the classifier forward and backward.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from anodiff.diffusion.guidance import class_conditioned, unet_eps
from anodiff.diffusion.training import TrainConfig
from anodiff.methods.base import Detector
from anodiff.methods.parts import (
    ClassifierPart,
    DiffusionPart,
    train_classifier,
    train_diffusion_unet,
)
from anodiff.methods.registry import register
from anodiff.methods.results import RawResult
from anodiff.methods.training_data import labelled_training_images
from anodiff.methods.translation import (
    QUICK_CLASSIFIER,
    QUICK_DIFFUSION,
    GuidedTranslationConfig,
    build_guided_networks,
    guided_decoder,
    translate_to_healthy,
)


@dataclass(frozen=True)
class DiffAnoConfig(GuidedTranslationConfig):
    """Wolleb's method: the translation settings, the gradient scale s and the two parts.

    The defaults are the ``cpu`` preset: 64² images, T = 1000, both parts trained on levels
    <= 500 only (the decoding never guides above L), L = 100 and s = 100 with
    DPM-Solver++(2M) 10 + 10 steps — the best of an L x s grid on the tumour track
    (docs/BENCHMARKS.md).
    """

    level: int = 100


@register("diffano")
class DiffAno(Detector[DiffAnoConfig]):
    supervision = "weak"
    level_setting = "level"
    reconstructs = True
    description = "DDIM noise encoding + classifier-guided decoding to healthy (Wolleb 2022)"
    counted = ("unet",)
    presets = {
        "quick": DiffAnoConfig(
            level=50, steps=10, solver="ddim", scale=100.0, batch_size=64,
            calibration_images=16, diffusion=QUICK_DIFFUSION, classifier=QUICK_CLASSIFIER),
        "cpu": DiffAnoConfig(),
        # Already at 10 + 10 solver steps, 20 network evaluations per slice (plus the
        # classifier's gradients): the best of a grid on the tumour track (the card).
        "fast": DiffAnoConfig(),
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

    def build(self, input_shape: tuple[int, ...]) -> None:
        super().build(input_shape)
        self.unet, self.classifier = build_guided_networks(self.config, self.input_shape)

    def fit_parts(self, data: Any) -> None:
        """Train the class-conditional UNet and the noise-aware classifier on all labelled
        train slices (each part checkpoints under ``run_dir/unet`` / ``run_dir/classifier``)."""
        images, labels = labelled_training_images(self.name, data)
        self.prepare(tuple(images.shape[1:]))
        self.unet = train_diffusion_unet(self.unet, self.config.diffusion, images,
                                         labels=labels, run_dir=self.run_dir, name="unet")
        self.classifier = train_classifier(self.classifier, self.config.classifier,
                                           self.schedule, images, labels,
                                           run_dir=self.run_dir, name="classifier")

    def step(self, x: Tensor, generator: torch.Generator) -> RawResult:
        """Algorithm 1: encode with the UNet at the healthy label (as Wolleb's code does),
        decode with it plus the classifier gradient toward healthy, take the residual."""
        conditioned = class_conditioned(unet_eps(self.unet), y=self.config.healthy_label)
        decoder = guided_decoder(conditioned, self.classifier, self.config, self.schedule)
        return translate_to_healthy(x, conditioned, decoder, self.config, self.schedule,
                                    generator)
