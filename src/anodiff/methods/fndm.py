"""``fndm``: fast non-Markovian diffusion with hybrid conditions (Li 2023).

Weakly supervised (review Sec. 5.3): every train slice with its image label, no masks. FNDM
is DiffANO (``diffano``) with stronger, pixel-wise conditions and a fast ODE solver:

* **Hybrid conditions** (Eq. 5). The class-conditional noise predictor
  ``eps_theta([x_t, x0^n, x_seg], t, y)`` sees, concatenated to the noisy image, an image
  ``x0^n`` and a coarse anomaly map ``x_seg``. In training, a healthy slice's ``x0^n`` is the
  slice corrupted inside a random free-form mask (Yu 2019) and ``x_seg`` that mask; the
  target is the clean slice, so the network learns to repair what ``x_seg`` points at
  ("non-Markovian": the original state ``x_0`` is carried to every step). A diseased slice
  (y = 1) is its own ``x0^n``, with its memory-bank map as ``x_seg``. At test time ``x0^n`` is
  the input and ``x_seg`` its memory-bank map.
* **Memory bank** (PatchCore, :mod:`anodiff.scoring.memory_bank`). The paper takes ImageNet
  features, which cannot be downloaded here; the features are those of the method's own
  noise-aware classifier at level 0 (the outputs of its first encoder blocks, brought to the
  first block's resolution and averaged over 3 x 3 neighbourhoods as PatchCore does). The
  bank is a greedy coreset of healthy training patches; a patch's score is its distance to
  the nearest bank entry, upsampled, smoothed and scaled so that the healthy 99th
  percentile (on healthy validation slices the bank has not seen) maps to 0 and twice it to
  1: ``x_seg = clip(d / d_99 - 1, 0, 1)``, the range of the training masks.
* **Classifier gradient** (Eq. 8): DiffANO's noise-aware classifier steers the decoding
  toward the healthy label with scale s.
* **Solver** (Eq. 9): DPM-Solver++(2M), multistep second order, for both the encoding to
  level L and the guided decoding (50 + 50 steps in the paper).

FNDM is built from DiffANO's parts (:mod:`.translation`: the class-conditional UNet, the
classifier, the guided decoder, the residual map) plus a **condition provider**,
:class:`HybridProvider`: a study replaces ``FNDM.conditions`` with its own provider (the true
lesion mask as ``x_seg``, say) instead of patching the detector. Map ``a = sum_c |x -
x_hat|``, the shared pipeline's Otsu mask and percentile score. The ablation switches of
the paper's Table 2 are ``hybrid.image`` (NM), ``hybrid.coarse_map`` (MB) and ``scale``
(CG, 0 = off).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from anodiff.data.anomalies.free_form import CORRUPTIONS, corrupt_inside, free_form_masks
from anodiff.diffusion.guidance import class_conditioned, concat_condition, unet_eps
from anodiff.diffusion.training import TrainConfig
from anodiff.diffusion.translation import ConditionProvider
from anodiff.errors import AnodiffError
from anodiff.methods.base import Detector
from anodiff.methods.parts import (
    ClassifierPart,
    DiffusionPart,
    train_classifier,
    train_diffusion_unet,
)
from anodiff.methods.registry import register
from anodiff.methods.results import RawResult
from anodiff.methods.training_data import labelled_training_images, split_validation
from anodiff.methods.translation import (
    QUICK_CLASSIFIER,
    QUICK_DIFFUSION,
    GuidedTranslationConfig,
    build_guided_networks,
    guided_decoder,
    translate_to_healthy,
)
from anodiff.scoring.foreground import foreground
from anodiff.scoring.memory_bank import MemoryBank
from anodiff.scoring.rules import calibrate_threshold
from anodiff.scoring.smoothing import gaussian_smooth


@dataclass(frozen=True)
class HybridConditions:
    """Which conditions the noise predictor sees, and how the coarse map is made.

    ``image`` (NM) concatenates ``x0^n``, ``coarse_map`` (MB) the memory-bank map ``x_seg``;
    ``corruption`` fills the training masks (:data:`~anodiff.data.anomalies.CORRUPTIONS`;
    FNDM does not say). The bank: outputs of the classifier's encoder ``feature_blocks``,
    ``coreset_size`` entries chosen from at most ``max_patches`` random healthy foreground
    patches, maps smoothed with ``smoothing_sigma`` px, scale calibrated on
    ``calibration_images`` healthy validation slices. Nested in the config because it shapes
    what is trained.
    """

    image: bool = True
    coarse_map: bool = True
    corruption: Literal["noise", "blend", "intensity"] = "noise"
    feature_blocks: tuple[int, ...] = (0, 1)
    coreset_size: int = 4000
    max_patches: int = 100_000
    smoothing_sigma: float = 1.0
    calibration_images: int = 64

    def channels(self, image_channels: int) -> int:
        """Condition channels concatenated to a noisy image of ``image_channels``."""
        return image_channels * self.image + int(self.coarse_map)

    def __post_init__(self) -> None:
        if self.corruption not in CORRUPTIONS:
            raise AnodiffError(f"corruption must be one of {CORRUPTIONS}, got "
                               f"{self.corruption!r}")
        blocks = self.feature_blocks
        if not blocks or len(set(blocks)) != len(blocks) or min(blocks) < 0:
            raise AnodiffError(f"feature_blocks must be distinct block indices, got {blocks}")
        for name in ("coreset_size", "max_patches", "calibration_images"):
            if getattr(self, name) < 1:
                raise AnodiffError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.smoothing_sigma >= 0:
            raise AnodiffError(f"smoothing_sigma must be >= 0, got {self.smoothing_sigma}")


@dataclass(frozen=True)
class FNDMConfig(GuidedTranslationConfig):
    """DiffANO's settings and parts (``cpu`` preset defaults) plus the hybrid conditions.

    ``scale`` is s of Eq. 8 (0 = no classifier gradient). ``steps`` hops for the encoding
    and again for the decoding, with ``solver`` ``dpmpp2m`` (the paper's Eq. 9): 50 + 50 as
    in the paper. On the tumour track FNDM's Dice still rises up to 100 steps where
    DiffANO's peaks by 25, so its 10 steps would not do (docs/BENCHMARKS.md, Fig. 4).
    """

    level: int = 100
    steps: int = 50
    hybrid: HybridConditions = field(default_factory=HybridConditions)


def check_feature_blocks(classifier: nn.Module, blocks: tuple[int, ...]) -> None:
    """Refuse feature blocks the classifier does not have (before anything is trained)."""
    count = len(classifier.down_blocks)
    if max(blocks) >= count:
        raise AnodiffError(f"fndm: hybrid.feature_blocks {blocks} but the classifier has "
                           f"{count} encoder blocks")


class EncoderFeatures:
    """Patch features of clean images from a noise-aware classifier's encoder blocks.

    The outputs of ``blocks`` (MONAI ``DiffusionModelEncoder.down_blocks``) at level 0 are
    resized to the first block's resolution, concatenated and averaged over 3 x 3
    neighbourhoods (PatchCore's local aggregation). Returns (N, D, h, w).
    """

    def __init__(self, classifier: nn.Module, blocks: tuple[int, ...]) -> None:
        check_feature_blocks(classifier, blocks)
        self.classifier, self.blocks = classifier, blocks

    @torch.no_grad()
    def __call__(self, images: Tensor) -> Tensor:
        outputs: dict[int, Tensor] = {}
        hooks = [self.classifier.down_blocks[b].register_forward_hook(
            lambda _m, _i, out, b=b: outputs.__setitem__(b, out[0])) for b in self.blocks]
        try:
            self.classifier(images, timesteps=torch.zeros(len(images), dtype=torch.long,
                                                          device=images.device))
        finally:
            for hook in hooks:
                hook.remove()
        size = outputs[self.blocks[0]].shape[-2:]
        maps = [F.interpolate(outputs[b].float(), size=size, mode="bilinear",
                              align_corners=False) for b in self.blocks]
        return F.avg_pool2d(torch.cat(maps, 1), 3, stride=1, padding=1)


class CoarseMapper:
    """``x_seg`` from a memory bank: nearest-bank distances, upsampled, smoothed, scaled."""

    def __init__(self, features: EncoderFeatures, bank: MemoryBank, reference: float,
                 smoothing_sigma: float) -> None:
        self.features, self.bank = features, bank
        self.reference, self.smoothing_sigma = reference, smoothing_sigma

    def distances(self, images: Tensor, batch_size: int = 64) -> Tensor:
        """Nearest-bank distance per pixel (N, H, W), zero in the background."""
        out = []
        for batch in images.split(batch_size):
            feats = self.features(batch)
            n, d, h, w = feats.shape
            dist = self.bank.distances(feats.permute(0, 2, 3, 1).reshape(-1, d))
            dist = F.interpolate(dist.view(n, 1, h, w), size=batch.shape[-2:], mode="bilinear",
                                 align_corners=False)[:, 0]
            out.append(gaussian_smooth(dist, self.smoothing_sigma))
        maps = torch.cat(out)
        return torch.where(foreground(images), maps, torch.zeros((), device=maps.device))

    def scale(self, distances: Tensor) -> Tensor:
        """Distances (N, H, W) as ``x_seg`` (N, 1, H, W) in [0, 1]: 0 up to the healthy 99th
        percentile, 1 at twice."""
        return (distances / self.reference - 1).clamp(0, 1)[:, None]

    def __call__(self, images: Tensor) -> Tensor:
        """``x_seg`` (N, 1, H, W) of ``images``."""
        return self.scale(self.distances(images))


@dataclass(frozen=True)
class HybridProvider:
    """FNDM's conditions for a batch (Eq. 5): the image itself (``image``, NM) and/or its
    coarse map (``coarse``, MB: images -> (N, 1, H, W), the memory-bank map by default)."""

    image: bool
    coarse: ConditionProvider | None

    def __call__(self, x: Tensor) -> Tensor:
        parts = [x] * self.image + ([self.coarse(x)] if self.coarse is not None else [])
        return torch.cat(parts, 1)


class HybridPairs:
    """Training samples with hybrid conditions, made on demand (virtual length ``length``).

    Item ``i`` is slice ``i mod N`` with its label; a healthy slice's condition is the slice
    corrupted inside a random free-form mask (within the brain) and the mask, a diseased
    slice's is the slice itself and its coarse map (``diseased_maps``, in slice order). The
    randomness of item ``i`` comes from a generator seeded by ``(seed, i)``: fresh masks for
    every draw, and exact resume.
    """

    def __init__(self, images: Tensor, labels: Tensor, diseased_maps: Tensor | None,
                 hybrid: HybridConditions, *, length: int, seed: int) -> None:
        if hybrid.coarse_map and diseased_maps is None:
            raise AnodiffError("fndm: hybrid.coarse_map needs the diseased slices' maps")
        self.images, self.labels, self.hybrid = images, labels, hybrid
        self.length, self.seed = length, seed
        self.map_row = torch.cumsum(labels == 1, 0) - 1  # row of a diseased slice's map
        self.diseased_maps = diseased_maps
        self.fg = foreground(images)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        row = index % len(self.images)
        image, label = self.images[row], self.labels[row]
        item = {"image": image, "label": label}
        hybrid = self.hybrid
        if not (hybrid.image or hybrid.coarse_map):  # CG only: no conditions to make
            return item
        if label == 0:
            rng = np.random.default_rng([self.seed, index])
            mask = free_form_masks(1, *image.shape[-2:], rng=rng)[0] & self.fg[row].numpy()
            corrupted = torch.from_numpy(corrupt_inside(
                image[None].numpy(), mask[None], rng=rng, mode=hybrid.corruption)[0]
            ) if hybrid.image else None
            coarse = torch.from_numpy(mask).float()[None]
        else:
            corrupted = image
            coarse = self.diseased_maps[self.map_row[row]] if hybrid.coarse_map else None
        cond = [corrupted] * hybrid.image + [coarse] * hybrid.coarse_map
        item["cond"] = torch.cat(cond).float()
        return item


@register("fndm")
class FNDM(Detector[FNDMConfig]):
    supervision = "weak"
    level_setting = "level"
    reconstructs = True
    description = "hybrid-conditioned (image + memory-bank map) diffusion, classifier " \
                  "gradient, DPM-Solver++ (Li 2023)"
    counted = ("unet",)
    legacy_keys = {"bank": "memory.features"}
    presets = {
        "quick": FNDMConfig(  # diffano's quick networks and training
            level=50, steps=10, scale=100.0, batch_size=64,
            hybrid=HybridConditions(coreset_size=200, max_patches=5000, smoothing_sigma=0.5,
                                    calibration_images=8),
            diffusion=QUICK_DIFFUSION, classifier=QUICK_CLASSIFIER),
        "cpu": FNDMConfig(),
        # No fast mode is measured to keep its figures: at 10 + 10 steps FNDM was the worst
        # diffusion method of the tumour track (best Dice 0.420, image AUROC 0.642; the
        # card); DDPM noising + 20 guided hops lost 0.074 / 0.134 pixel AP on the full
        # tumour / stroke splits (docs/BENCHMARKS.md, issue 23 part 10), so `fast` is the
        # cpu preset (DiffANO is the 20-evaluation method of this family).
        "fast": FNDMConfig(),
        # Paper: DiffANO's networks, Adam 1e-4, batch 3 (UNet) / 10 (classifier), 130,000 /
        # 150,000 iterations, T = 1000, 50 + 50 solver steps. L and s are not given:
        # DiffANO's (500, 100).
        "paper": FNDMConfig(
            level=500, steps=50, solver="dpmpp2m", scale=100.0, batch_size=10,
            hybrid=HybridConditions(coreset_size=20_000, max_patches=1_000_000,
                                    smoothing_sigma=4.0),
            diffusion=DiffusionPart(net="paper", num_steps=1000, train=TrainConfig(
                steps=130_000, batch_size=3, lr=1e-4, warmup_steps=0, ema_decay=0.9999,
                checkpoint_every=1000)),
            classifier=ClassifierPart(net="paper", train=TrainConfig(
                steps=150_000, batch_size=10, lr=1e-4, warmup_steps=0, ema_decay=None,
                checkpoint_every=1000))),
    }

    def __init__(self, config: FNDMConfig) -> None:
        super().__init__(config)
        self.schedule = config.diffusion.noise_schedule()
        # The condition provider; None: the fitted hybrid conditions (hybrid_conditions()).
        self.conditions: ConditionProvider | None = None

    def build(self, input_shape: tuple[int, ...]) -> None:
        super().build(input_shape)
        hybrid = self.config.hybrid
        self.unet, self.classifier = build_guided_networks(
            self.config, self.input_shape, cond_channels=hybrid.channels(self.input_shape[0]))
        if hybrid.coarse_map:
            check_feature_blocks(self.classifier, hybrid.feature_blocks)
            self.memory = MemoryBank()
            # The healthy 99th percentile of the bank distance, x_seg's scale (fitted).
            self.register_buffer("reference", torch.tensor(float("nan")))

    def coarse_mapper(self) -> CoarseMapper:
        """The fitted memory-bank map maker (refuses before the bank is built)."""
        if not self.config.hybrid.coarse_map or self.input_shape is None:
            raise AnodiffError(f"{self.name}: no memory bank (hybrid.coarse_map is off, or "
                               "the method is not fitted)")
        features = EncoderFeatures(self.classifier, self.config.hybrid.feature_blocks)
        return CoarseMapper(features, self.memory, float(self.reference),
                            self.config.hybrid.smoothing_sigma)

    def hybrid_conditions(self) -> ConditionProvider | None:
        """The fitted conditions of the settings (None when the network takes none)."""
        hybrid = self.config.hybrid
        if not (hybrid.image or hybrid.coarse_map):
            return None
        return HybridProvider(hybrid.image, self.coarse_mapper() if hybrid.coarse_map else None)

    def fit_parts(self, data: Any) -> None:
        """Train the classifier, build the memory bank from healthy train slices (calibrated
        on healthy validation slices), then train the hybrid-conditioned UNet (parts
        checkpoint under ``run_dir/classifier`` and ``run_dir/unet``)."""
        images, labels = labelled_training_images(self.name, data)
        self.prepare(tuple(images.shape[1:]))
        self.classifier = train_classifier(self.classifier, self.config.classifier,
                                           self.schedule, images, labels,
                                           run_dir=self.run_dir, name="classifier")
        diseased_maps = None
        if self.config.hybrid.coarse_map:
            self.fit_bank(data, images[labels == 0])
            diseased_maps = self.coarse_mapper()(images[labels == 1].to(self.device)).cpu()
        part = self.config.diffusion
        pairs = HybridPairs(images, labels, diseased_maps, self.config.hybrid,
                            length=part.train.steps * part.train.batch_size,
                            seed=part.train.seed)
        self.unet = train_diffusion_unet(self.unet, part, pairs, run_dir=self.run_dir,
                                         name="unet")

    def fit_bank(self, data: Any, healthy: Tensor) -> None:
        """The coreset of healthy patch features (from the same number of random foreground
        patches of every slice, ``max_patches`` in all), and the healthy 99th percentile of
        the nearest-bank distance on validation slices the bank does not hold."""
        hybrid = self.config.hybrid
        seed = self.config.diffusion.train.seed
        train, val = split_validation(self.name, data, healthy, hybrid.calibration_images, seed)
        features = EncoderFeatures(self.classifier, hybrid.feature_blocks)
        generator = torch.Generator().manual_seed(seed)
        per_image = -(-hybrid.max_patches // len(train))  # the pool never exceeds ~max_patches
        patches = []
        for batch in train.split(64):
            feats = features(batch.to(self.device)).cpu()
            fg = F.interpolate(foreground(batch)[:, None].float(), size=feats.shape[-2:])[:, 0]
            for image_feats, image_fg in zip(feats.permute(0, 2, 3, 1), fg, strict=True):
                inside = image_feats[image_fg > 0]
                patches.append(inside[torch.randperm(len(inside), generator=generator)
                                      [:per_image]])
        pool = torch.cat(patches)[: hybrid.max_patches]
        self.memory.fit(pool, hybrid.coreset_size, seed=seed)
        unscaled = CoarseMapper(features, self.memory, 1.0, hybrid.smoothing_sigma)
        val = val.to(self.device)
        reference = calibrate_threshold(unscaled.distances(val).cpu(), foreground(val).cpu(),
                                        fpr=0.01)
        self.reference.fill_(max(reference, 1e-8))

    def step(self, x: Tensor, generator: torch.Generator) -> RawResult:
        """DiffANO's step with the batch's conditions (the input and its coarse map by
        default) concatenated to the noisy image; the classifier gradient (Eq. 8) guides the
        decoding unless s = 0."""
        conditioned = class_conditioned(unet_eps(self.unet), y=self.config.healthy_label)
        provider = self.conditions if self.conditions is not None else self.hybrid_conditions()
        if provider is not None:
            conditioned = concat_condition(conditioned, provider(x))
        decoder = guided_decoder(conditioned, self.classifier, self.config, self.schedule)
        return translate_to_healthy(x, conditioned, decoder, self.config, self.schedule,
                                    generator)
