"""Parts of the weakly supervised translation methods (diffano, counterfactual, fndm).

All three follow review Sec. 2.2 / 5.3: encode the input ``x_P`` to a noise level ``L``,
decode it under guidance toward the healthy class, and take the residual
``a = sum_channels |x_P - x_hat_H|`` (Wolleb 2022, Algorithm 1, last line) as the anomaly
map. They differ in their noise predictors (the guidance recipe) and conditions, which
each method states in its ``step``; the settings, the translator and the residual are here:

* Encoding ``"ddim"``: deterministic noise encoding (review Eq. 6, Algorithm 1 lines 1-3)
  and decoding with the same solver. ``"ddpm"`` is Wolleb's ablation: noise the input with
  ``q_sample`` to ``L`` (Eq. 2) and sample back with the ancestral DDPM scheme (Eq. 5),
  both guided in the same way.
* Map: the channel-summed absolute residual of the pseudo-healthy image clipped to the data
  range [0, 1]; the shared pipeline zeroes it outside the brain, thresholds it (Otsu by
  default, Wolleb's Dice protocol) and scores it (99th percentile by default: the paper
  defines no image score).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor, nn

from anodiff.diffusion.guidance import EpsFn, classifier_guided, classifier_logits
from anodiff.diffusion.schedule import NoiseSchedule
from anodiff.diffusion.seeding import seeded
from anodiff.diffusion.training import TrainConfig
from anodiff.diffusion.translation import Denoising, Inversion, Noising, Translator
from anodiff.errors import AnodiffError
from anodiff.methods.base import LocalizationConfig
from anodiff.methods.parts import ClassifierPart, DiffusionPart, build_diffusion_unet
from anodiff.methods.results import RawResult
from anodiff.nets.builders import build_classifier
from anodiff.scoring.residuals import absolute_residual

NUM_CLASSES = 2  # 0 = healthy, 1 = anomalous
# The quick preset's parts (tests: tiny networks, seconds of training), shared by the
# classifier-guided methods.
QUICK_DIFFUSION = DiffusionPart(net="quick", num_steps=100, train=TrainConfig(
    steps=60, batch_size=16, lr=3e-3, warmup_steps=5, ema_decay=None))
QUICK_CLASSIFIER = ClassifierPart(net="quick", train=TrainConfig(
    steps=60, batch_size=16, lr=3e-3, warmup_steps=5, ema_decay=None))


@dataclass(frozen=True)
class TranslationConfig(LocalizationConfig):
    """Settings of the encode -> guided decode -> residual step and the diffusion model.

    ``level`` is L, the noise level the input is encoded to (of T = ``diffusion.num_steps``);
    ``steps`` the hops of the encoding and, again, of the decoding (step skipping; ``steps =
    level`` is the paper's every-level DDIM); ``decode_steps``, when set, the decoding's hops
    instead (the guided decoding costs one or two evaluations a hop, the encoding one, so a
    budget of evaluations need not be split evenly: Issue 23 measures where the hops matter);
    ``solver`` ``ddim`` (the paper) or ``dpmpp2m``
    (second order, fewer steps) for both directions; ``encoding`` ``ddim`` (the method) or
    ``ddpm`` (the paper's ablation, see the module docstring; it decodes with the ancestral
    DDPM scheme whatever ``solver`` says).

    ``healthy_label`` is the class index the decoding is steered toward. The data's labels
    are 0 = healthy and 1 = anomalous (design brief), so 0 is right; it is a setting, not a
    constant, because getting it wrong is easy and silent: MONAI's tutorial of Wolleb's
    method has its class labels inverted relative to its own text.
    """

    level: int = 400
    steps: int = 10
    decode_steps: int | None = None
    solver: Literal["ddim", "dpmpp2m"] = "dpmpp2m"
    encoding: Literal["ddim", "ddpm"] = "ddim"
    healthy_label: int = 0
    diffusion: DiffusionPart = field(default_factory=lambda: DiffusionPart(
        net="cpu", num_steps=1000, max_level=500, train=TrainConfig(
            steps=900, batch_size=16, lr=1e-3, warmup_steps=50, ema_decay=0.995)))

    def trained_levels(self) -> dict[str, int | None]:
        """The highest level each trained part knows (None: all of them)."""
        return {"diffusion": self.diffusion.max_level}

    def check(self) -> None:
        super().check()
        if self.solver not in ("ddim", "dpmpp2m"):
            raise AnodiffError(f"solver must be 'ddim' or 'dpmpp2m', got {self.solver!r}")
        if self.encoding not in ("ddim", "ddpm"):
            raise AnodiffError(f"encoding must be 'ddim' or 'ddpm', got {self.encoding!r}")
        top = self.diffusion.num_steps
        for level in (self.level, *self.levels):
            if not 1 <= level <= top:
                raise AnodiffError(f"level must be in [1, {top}] (T), got {level}")
            for part, max_level in self.trained_levels().items():
                if max_level is not None and level > max_level:
                    raise AnodiffError(f"level {level} is above the levels the {part} is "
                                       f"trained on ({part}.max_level = {max_level})")
        if self.steps < 1:
            raise AnodiffError(f"steps must be >= 1, got {self.steps}")
        if self.decode_steps is not None and self.decode_steps < 1:
            raise AnodiffError(f"decode_steps must be >= 1 (or unset: the decoding takes "
                               f"`steps` hops), got {self.decode_steps}")
        if self.healthy_label not in (0, 1):
            raise AnodiffError(f"healthy_label must be 0 or 1 (labels: 0 = healthy, "
                               f"1 = anomalous), got {self.healthy_label}")

    @property
    def decoding_hops(self) -> int:
        """The hops of the decoding: ``decode_steps`` when set, else ``steps``."""
        return self.steps if self.decode_steps is None else self.decode_steps

    def translator(self) -> Translator:
        """The encoder and decoder these settings describe."""
        if self.encoding == "ddpm":
            return Translator(Noising(self.level),
                              Denoising(self.level, self.decoding_hops, "ddpm"))
        return Translator(Inversion(self.level, self.steps, self.solver),
                          Denoising(self.level, self.decoding_hops, self.solver))


@dataclass(frozen=True)
class GuidedTranslationConfig(TranslationConfig):
    """A translation guided by a noise-aware classifier's gradient (Wolleb 2022; FNDM).

    ``scale`` is s of Algorithm 1 (0 = no guidance: a plain round trip);
    ``classifier`` the noise-aware classifier part.
    """

    scale: float = 100.0
    classifier: ClassifierPart = field(default_factory=lambda: ClassifierPart(
        net="cpu", max_level=500, train=TrainConfig(
            steps=2000, batch_size=16, lr=1e-3, warmup_steps=20, ema_decay=None)))

    def trained_levels(self) -> dict[str, int | None]:
        return {**super().trained_levels(), "classifier": self.classifier.max_level}

    def check(self) -> None:
        super().check()
        if not self.scale >= 0:
            raise AnodiffError(f"scale (s) must be >= 0, got {self.scale}")


def build_guided_networks(config: GuidedTranslationConfig, input_shape: tuple[int, ...],
                          cond_channels: int = 0) -> tuple[nn.Module, nn.Module]:
    """The class-conditional UNet (with ``cond_channels`` condition channels) and the
    noise-aware classifier of a guided translation, each initialised from ``config.seed``."""
    channels, *size = input_shape
    with seeded(config.seed):
        unet = build_diffusion_unet(config.diffusion, channels, num_class_embeds=NUM_CLASSES,
                                    cond_channels=cond_channels)
    with seeded(config.seed):
        classifier = build_classifier(config.classifier.net, channels, NUM_CLASSES,
                                      tuple(size))
    return unet, classifier


def guided_decoder(conditioned: EpsFn, classifier: nn.Module, config: GuidedTranslationConfig,
                   schedule: NoiseSchedule) -> EpsFn:
    """Algorithm 1's decoding predictor: ``conditioned`` plus the classifier gradient toward
    the healthy label with scale s (``conditioned`` itself when s = 0)."""
    if config.scale == 0:
        return conditioned
    return classifier_guided(conditioned, classifier_logits(classifier),
                             y=config.healthy_label, scale=config.scale, schedule=schedule)


def translate_to_healthy(x: Tensor, encoder_eps: EpsFn, decoder_eps: EpsFn,
                         config: TranslationConfig, schedule: NoiseSchedule,
                         generator: torch.Generator) -> RawResult:
    """The pseudo-healthy image of ``x`` (clipped to [0, 1], an image users open) and the
    residual map ``sum_c |x - x_hat|`` (Wolleb 2022, Algorithm 1, line 8)."""
    x_hat, nfe = config.translator()(x, encoder_eps, decoder_eps, schedule, generator)
    x_hat = x_hat.clamp(0, 1)
    return RawResult(anomaly_map=absolute_residual(x, x_hat), nfe=nfe, pseudo_healthy=x_hat)
