"""``counterfactual``: healthy counterfactuals with classifier-free guidance (Sanchez 2022).

Weakly supervised without a classifier (review Sec. 5.3, "Gradient-free Guidance"): ONE
class-conditional diffusion model ``eps_theta(x_l, l, c)`` is trained on every train slice
with its image label c (0 = healthy, 1 = anomalous), the label replaced by the null label
(c = 2, "no class") with probability ``label_dropout`` so that the same network is also the
unconditional model (Ho & Salimans 2022; review Sec. 2.3). To answer "how would this patient
appear without the pathology?":

1. encode ``x`` to ``x_L`` with DDIM (review Eq. 6) under the anomalous label (the patient's
   observed class) or, with ``encode_label="null"``, unconditionally;
2. decode ``x_L`` under the healthy label with classifier-free guidance of weight w:
   ``eps = eps(x_l, l, null) + w (eps(x_l, l, healthy) - eps(x_l, l, null))``;
3. ``a = sum_channels |x - x_hat|``; the shared pipeline's Otsu mask and percentile score
   (as ``diffano``).

NFE per image: the encoding steps plus 2 per decoding step (the conditional and the
unconditional evaluation run as one batch of 2N); w = 1 (the healthy-conditional model
alone) and w = 0 (the unconditional model alone) need one evaluation per step.

``anodiff distill`` gives a run a few-step student of the guided decoder (Meng et al. 2023;
:mod:`anodiff.diffusion.distillation`): a copy of the network, under the healthy label
alone, that decodes from L in ``student.steps`` DDIM hops of one evaluation each, while the
encoding keeps the trained network (``steps`` hops): NFE = ``steps + student.steps``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Literal

import torch
from torch import Tensor, nn

from anodiff.diffusion.distillation import DecoderSegment
from anodiff.diffusion.guidance import EpsFn, class_conditioned, unet_eps
from anodiff.diffusion.seeding import seeded
from anodiff.diffusion.training import TrainConfig
from anodiff.diffusion.translation import Denoising, Inversion, Translator
from anodiff.errors import AnodiffError
from anodiff.methods.base import Detector
from anodiff.methods.parts import (
    DiffusionPart,
    StudentPart,
    build_diffusion_unet,
    train_diffusion_unet,
)
from anodiff.methods.registry import register
from anodiff.methods.results import RawResult
from anodiff.methods.training_data import labelled_training_images
from anodiff.methods.translation import TranslationConfig, translate_to_healthy

NULL_LABEL = 2  # the "no class" index of label dropout; classes are 0 = healthy, 1 = anomalous
NUM_CLASS_EMBEDS = 3


@dataclass(frozen=True)
class CounterfactualConfig(TranslationConfig):
    """The translation settings plus the guidance weight, label dropout and the one model.

    ``cfg_scale`` is w (1 = the healthy-conditional model alone, > 1 pushes further away from
    the unconditional model, 0 = unconditional); ``label_dropout`` the probability of training
    a sample with the null label; ``encode_label`` the class the DDIM encoding is conditioned
    on (``anomalous`` = 1 - ``healthy_label``, or ``null``); ``student``, set by
    ``anodiff distill`` only, the distilled decoder (None: the guided one). Defaults: the
    ``cpu`` preset.
    """

    level: int = 50
    cfg_scale: float = 6.0
    label_dropout: float = 0.15
    encode_label: Literal["anomalous", "null"] = "anomalous"
    student: StudentPart | None = None

    def check(self) -> None:
        super().check()
        if not 0 < self.label_dropout < 1:
            raise AnodiffError(f"label_dropout must be in (0, 1) to train the unconditional "
                               f"model, got {self.label_dropout}")
        if self.encode_label not in ("anomalous", "null"):
            raise AnodiffError(f"encode_label must be 'anomalous' or 'null', got "
                               f"{self.encode_label!r}")
        if not self.cfg_scale >= 0:
            raise AnodiffError(f"cfg_scale (w) must be >= 0, got {self.cfg_scale}")
        if self.student is not None and self.decode_steps is not None:
            raise AnodiffError(f"the distilled student decodes in its own {self.student.steps} "
                               f"hops; unset decode_steps")
        if self.student is not None and (self.encoding != "ddim" or self.levels or
                                         self.level != self.student.level):
            raise AnodiffError(f"the distilled student decodes a DDIM encoding from level "
                               f"{self.student.level} only; keep encoding ddim, level "
                               f"{self.student.level} and no levels")

    def translator(self) -> Translator:
        """The guided translation; with a student, the DDIM encoding in ``steps`` hops and
        the student's ``student.steps`` DDIM hops back."""
        if self.student is None:
            return super().translator()
        return Translator(Inversion(self.level, self.steps, self.solver),
                          Denoising(self.level, self.student.steps, "ddim"))


@register("counterfactual")
class Counterfactual(Detector[CounterfactualConfig]):
    supervision = "weak"
    level_setting = "level"
    reconstructs = True
    description = "DDIM encoding + classifier-free guided decoding to healthy (Sanchez 2022)"
    counted = ("unet",)
    presets = {
        "quick": CounterfactualConfig(
            level=50, steps=10, solver="ddim", cfg_scale=3.0, batch_size=64,
            calibration_images=16,
            diffusion=DiffusionPart(net="quick", num_steps=100, train=TrainConfig(
                steps=120, batch_size=16, lr=3e-3, warmup_steps=5, ema_decay=None))),
        "cpu": CounterfactualConfig(),
        # No fast mode keeps its figures: 6 + 6 steps (18 evaluations instead of 30) lost
        # 0.18 pixel AP on the full tumour split (the card), so `fast` is the cpu preset.
        "fast": CounterfactualConfig(),
        # Sanchez et al.'s own settings are not in the project's sources: this preset uses
        # Wolleb's network, training and level / step settings with w = 3 (see the card).
        "paper": CounterfactualConfig(
            level=500, steps=500, solver="ddim", cfg_scale=3.0, batch_size=10,
            diffusion=DiffusionPart(net="paper", num_steps=1000, train=TrainConfig(
                steps=50_000, batch_size=10, lr=1e-4, warmup_steps=0, ema_decay=0.9999,
                checkpoint_every=1000))),
    }

    def __init__(self, config: CounterfactualConfig) -> None:
        super().__init__(config)
        self.schedule = config.diffusion.noise_schedule()

    def build(self, input_shape: tuple[int, ...]) -> None:
        super().build(input_shape)
        with seeded(self.config.seed):
            self.unet = build_diffusion_unet(self.config.diffusion, self.input_shape[0],
                                             num_class_embeds=NUM_CLASS_EMBEDS)
        if self.config.student is not None:  # its weights come with the distilled run
            self.student = build_diffusion_unet(self.config.diffusion, self.input_shape[0],
                                                num_class_embeds=NUM_CLASS_EMBEDS)

    def fit_parts(self, data: Any) -> None:
        """Train the one class-conditional UNet with label dropout on all labelled train
        slices (checkpoints under ``run_dir/unet``)."""
        images, labels = labelled_training_images(self.name, data)
        self.prepare(tuple(images.shape[1:]))
        self.unet = train_diffusion_unet(
            self.unet, self.config.diffusion, images, labels=labels,
            label_dropout=self.config.label_dropout, null_label=NULL_LABEL,
            run_dir=self.run_dir, name="unet")

    def step(self, x: Tensor, generator: torch.Generator) -> RawResult:
        encoder, decoder = self.predictors()
        return translate_to_healthy(x, encoder, decoder, self.config, self.schedule, generator)

    def predictors(self) -> tuple[EpsFn, EpsFn]:
        """The encoding predictor (anomalous or null label) and the healthy decoder: the
        guided one, or the distilled student's."""
        eps = unet_eps(self.unet)
        encode_label = 1 - self.config.healthy_label \
            if self.config.encode_label == "anomalous" else NULL_LABEL
        decoder = self.student_eps(self.student) if self.config.student is not None \
            else self.guided_decoder()
        return class_conditioned(eps, y=encode_label), decoder

    def guided_decoder(self) -> EpsFn:
        """Classifier-free guidance toward the healthy label with weight w."""
        eps, healthy, w = unet_eps(self.unet), self.config.healthy_label, self.config.cfg_scale
        if w in (0, 1):  # the unconditional or the healthy model alone: one evaluation
            return class_conditioned(eps, y=NULL_LABEL if w == 0 else healthy)
        return class_conditioned(eps, y=healthy, cfg_scale=w, null_label=NULL_LABEL)

    def student_eps(self, network: nn.Module) -> EpsFn:
        """A student network as the decoder evaluates it: under the healthy label, once."""
        return class_conditioned(unet_eps(network), y=self.config.healthy_label)

    # --- few-step students (anodiff distill) ---------------------------------------------
    def decoder_segment(self) -> DecoderSegment:
        """The guided decoder from L, whose student starts from the trained network; on a
        distilled run, its student (a further halving starts from it)."""
        if self.config.encoding != "ddim" or self.config.levels:
            raise AnodiffError("counterfactual: a few-step student decodes a DDIM encoding "
                               "from one L; distil a run with encoding ddim and no levels")
        if self.config.student is not None:
            return DecoderSegment(self.student_eps(self.student), self.student, self.schedule,
                                  self.config.level, self.config.student.steps,
                                  as_eps=self.student_eps)
        return DecoderSegment(self.guided_decoder(), self.unet, self.schedule,
                              self.config.level, self.config.decoding_hops,
                              as_eps=self.student_eps)

    def distillation_images(self, data: Any) -> Tensor:
        """Every labelled training slice (those the network trained on), in [0, 1]."""
        images, _ = labelled_training_images(self.name, data)
        return images

    def with_student(self, student: nn.Module, steps: int) -> Counterfactual:
        """This run with ``student`` as its decoder in ``steps`` DDIM hops."""
        distilled = self.sharing(replace(self.config,
                                         student=StudentPart(steps, self.config.level)))
        distilled.student = student
        return distilled
