"""Pseudo-healthy translation shared by the weakly supervised methods (diffano, counterfactual).

Both methods follow review Sec. 2.2 / 5.3: encode the input ``x_P`` to a noise level ``L``,
decode it under guidance toward the healthy class, and take the residual
``a = sum_channels |x_P - x_hat_H|`` (Wolleb 2022, Algorithm 1, last line) as the anomaly
map. They differ only in the two noise predictors they pass to :func:`translate` (how the
encoding and the decoding are conditioned), so the settings, the validation, the batching and
the map / mask / score step live here once.

* Encoding ``"ddim"``: deterministic DDIM noise encoding (review Eq. 6, Algorithm 1 lines
  1-3), then deterministic decoding with the same solver. ``"ddpm"`` is Wolleb's ablation:
  noise the input with ``q_sample`` to ``L`` (Eq. 2) and sample back with the ancestral
  DDPM scheme (Eq. 5, ``sigma_t`` of DDPM), both guided in the same way.
* Map: the channel-summed absolute residual, zeroed outside the brain foreground (pixel
  metrics are computed inside it). Mask: each map's own Otsu threshold inside the foreground
  (Wolleb's Dice protocol). Image score: the ``score_percentile`` of the map inside the
  foreground (the paper defines none; a high percentile is robust to single noisy pixels and
  is what the project's other detectors report).
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn

from anodiff.diffusion.guidance import EpsFn
from anodiff.diffusion.samplers import decode, encode
from anodiff.diffusion.schedule import NoiseSchedule
from anodiff.errors import AnodiffError
from anodiff.methods.base import AnomalyResult, Detector
from anodiff.methods.common import foreground, image_scores, training_images
from anodiff.scoring.thresholds import per_image_otsu


@dataclass(frozen=True)
class TranslationConfig:
    """Settings of the encode -> guided decode -> residual step (both weak methods).

    ``level`` is L, the noise level the input is encoded to (of T = ``diffusion.num_steps``);
    ``steps`` the hops of the encoding and, again, of the decoding (step skipping; ``steps =
    level`` is the paper's every-level DDIM); ``solver`` ``ddim`` (the paper) or ``dpmpp2m``
    (second order, fewer steps) for both directions; ``encoding`` ``ddim`` (the method) or
    ``ddpm`` (the paper's ablation, see the module docstring; it decodes with the ancestral
    DDPM scheme whatever ``solver`` says).

    ``healthy_label`` is the class index the decoding is steered toward. The data's labels
    are 0 = healthy and 1 = anomalous (design brief), so 0 is right; it is a setting, not a
    constant, because getting it wrong is easy and silent: MONAI's tutorial of Wolleb's
    method has its class labels inverted relative to its own text (it steers toward the
    class its text calls diseased).

    ``seed`` seeds the only random draws at test time (the ``ddpm`` ablation's noise);
    ``batch_size`` is how many images are translated at once.
    """

    level: int = 400
    steps: int = 10
    solver: Literal["ddim", "dpmpp2m"] = "dpmpp2m"
    encoding: Literal["ddim", "ddpm"] = "ddim"
    healthy_label: int = 0
    score_percentile: float = 99.0
    batch_size: int = 32
    seed: int = 0


def check_translation(name: str, config: TranslationConfig, schedule: NoiseSchedule,
                      trained_levels: dict[str, int | None]) -> None:
    """Refuse settings the method cannot honour, with the setting named in the message.

    ``trained_levels`` maps a part's name to the highest level it was trained on (None = all
    of them): guiding or encoding above it would use a network outside its training range.
    """
    if config.solver not in ("ddim", "dpmpp2m"):
        raise AnodiffError(f"{name}: solver must be 'ddim' or 'dpmpp2m', got {config.solver!r}")
    if config.encoding not in ("ddim", "ddpm"):
        raise AnodiffError(f"{name}: encoding must be 'ddim' or 'ddpm', got {config.encoding!r}")
    if not 1 <= config.level <= schedule.num_steps:
        raise AnodiffError(f"{name}: level must be in [1, {schedule.num_steps}] (T), "
                           f"got {config.level}")
    for part, max_level in trained_levels.items():
        if max_level is not None and config.level > max_level:
            raise AnodiffError(f"{name}: level {config.level} is above the levels the {part} "
                               f"is trained on ({part}.max_level = {max_level})")
    if config.steps < 1 or config.batch_size < 1:
        raise AnodiffError(f"{name}: steps and batch_size must be >= 1")
    if config.healthy_label not in (0, 1):
        raise AnodiffError(f"{name}: healthy_label must be 0 or 1 (labels: 0 = healthy, "
                           f"1 = anomalous), got {config.healthy_label}")
    if not 0 <= config.score_percentile <= 100:
        raise AnodiffError(f"{name}: score_percentile must be in [0, 100]")


def labelled_training_images(name: str, data: Any) -> tuple[Tensor, Tensor]:
    """All train slices with their image labels (weak supervision), both classes required."""
    images, labels = training_images(data, "weak", with_labels=True)
    if labels is None:
        raise AnodiffError(f"{name} is weakly supervised: it needs image labels (a dataset, or "
                           "items with 'image' and 'label'), not a bare image array")
    present = set(labels.unique().tolist())
    if present != {0, 1}:
        raise AnodiffError(f"{name}: training needs healthy (0) and anomalous (1) slices; "
                           f"the labels present are {sorted(present)}")
    return images, labels


def check_images(name: str, images: Any, input_shape: tuple[int, ...]) -> Tensor:
    """``images`` as a float tensor (N, C, H, W) of the shape the method was fitted on."""
    images = torch.as_tensor(images, dtype=torch.float32)
    if images.dim() != 4 or tuple(images.shape[1:]) != tuple(input_shape):
        raise AnodiffError(f"{name}: expected images (N, {', '.join(map(str, input_shape))}), "
                           f"got {tuple(images.shape)}")
    return images


def translate(encoder: EpsFn, decoder: EpsFn, x: Tensor, schedule: NoiseSchedule,
              config: TranslationConfig, generator: torch.Generator) -> tuple[Tensor, int]:
    """The pseudo-healthy image of ``x`` and the network evaluations spent per image.

    ``encoding="ddim"``: ``x_L = encode(encoder, x)`` (Eq. 6), ``x_hat = decode(decoder,
    x_L)`` (Eq. 5 with sigma = 0, or DPM-Solver++(2M)). ``encoding="ddpm"``: ``x_L =
    q_sample(x, L)`` (Eq. 2, no network) and ancestral decoding (Eq. 5); ``generator`` draws
    its noise on the CPU, so results do not depend on the device.
    """
    if config.encoding == "ddim":
        encoded = encode(encoder, x, schedule, config.level, config.steps, config.solver)
        decoded = decode(decoder, encoded.x, schedule, config.level, config.steps,
                         config.solver)
        return decoded.x, encoded.nfe + decoded.nfe
    noise = torch.randn(x.shape, generator=generator).to(x.device, x.dtype)
    x_level = schedule.q_sample(x, config.level, noise)
    decoded = decode(decoder, x_level, schedule, config.level, config.steps, "ddpm",
                     generator=generator)
    return decoded.x, decoded.nfe


def translate_batches(images: Tensor, network: nn.Module,
                      translate_batch: Callable[[Tensor], tuple[Tensor, int]],
                      batch_size: int) -> tuple[Tensor, int]:
    """Run ``translate_batch`` over ``images`` in batches on ``network``'s device.

    Returns the pseudo-healthy images on the CPU, clipped to the data range [0, 1] (they are
    images a user opens), and the NFE per image (the same for every batch).
    """
    device = next(network.parameters()).device
    outputs, nfe = [], 0
    for batch in images.split(batch_size):
        x_hat, nfe = translate_batch(batch.to(device))
        outputs.append(x_hat.clamp(0, 1).cpu())
    return torch.cat(outputs), nfe


def residual_result(images: Tensor, pseudo_healthy: Tensor, nfe: int,
                    score_percentile: float) -> AnomalyResult:
    """Map ``sum_c |x - x_hat|`` in the foreground, per-image Otsu mask, percentile score."""
    fg = foreground(images)
    residual = (images - pseudo_healthy).abs().sum(1)
    maps = torch.where(fg, residual, torch.zeros_like(residual))
    mask = torch.from_numpy(per_image_otsu(maps.numpy(), fg.numpy()))
    return AnomalyResult(anomaly_map=maps, score=image_scores(maps, fg, score_percentile),
                         nfe=nfe, pseudo_healthy=pseudo_healthy, mask=mask)


class TranslationDetector(Detector):
    """A detector that translates images to pseudo-healthy ones (diffano, counterfactual).

    Subclasses set ``self.unet`` and ``self.schedule`` and say, in :meth:`predictors`, how
    the encoding and the guided decoding of a batch are conditioned; localisation is shared.
    """

    unet: nn.Module | None
    schedule: NoiseSchedule

    @abstractmethod
    def predictors(self, x: Tensor) -> tuple[EpsFn, EpsFn]:
        """The noise predictors of the encoding and of the (guided) decoding of the batch
        ``x`` (N, C, H, W) in [0, 1]; methods conditioned on the image itself use ``x``."""

    def localize(self, images: Tensor) -> AnomalyResult:
        self.check_fitted()
        assert self.input_shape is not None and self.unet is not None
        images = check_images(self.name, images, self.input_shape)
        generator = torch.Generator().manual_seed(self.config.seed)
        pseudo_healthy, nfe = translate_batches(
            images, self.unet,
            lambda x: translate(*self.predictors(x), x, self.schedule, self.config, generator),
            self.config.batch_size)
        return residual_result(images, pseudo_healthy, nfe, self.config.score_percentile)
