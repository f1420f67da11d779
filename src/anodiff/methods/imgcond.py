"""``imgcond``: image-conditioned diffusion that restores synthetic anomalies (Baugh 2024).

Self-supervised (review Sec. 5.4): reconstruction methods assume that the model removes
anomalies and keeps everything else; Baugh et al. train for exactly that.

1. **Training pairs.** A healthy slice ``x_0`` is corrupted by one of Baugh's five synthetic
   tasks (:mod:`anodiff.data.anomalies`), or left as it is with probability 0.2, giving
   ``x~_0``; the model ``eps_theta([x_t, x~_0], t)`` learns to denoise the *healthy* target
   ``x_t`` while seeing the corrupted image as extra input channels (concatenation
   guidance), i.e. Eq. 4 with the condition concatenated.
2. **Task folds.** Every 3-of-5 combination of tasks trains one member (10 members); the
   two held-out tasks corrupt the validation slices whose denoising loss stops the member
   early (:class:`~anodiff.diffusion.training.Trainer`).
3. **Restoration.** From pure Gaussian noise at level T, the reverse process runs
   conditioned on the test image throughout (50 DDPM steps in the paper, or a fast solver)
   and yields a pseudo-healthy version of it.
4. **Map and score.** ``1 - SSIM(x_hat, x)`` (11-pixel window, averaged over channels,
   :mod:`anodiff.scoring.residuals`; the ``paper`` preset), or the absolute residual (the
   default: it localises 2-17x better here, docs/BENCHMARKS.md); the ensemble map is the
   mean of the members' maps, their standard deviation the ``uncertainty``. The shared
   pipeline zeroes both in the background, scores an image by the mean of its map
   (``score: mean``, Baugh's) and masks it with its own Otsu threshold in the foreground.

What is not the paper's, each a setting: the ``cpu`` preset trains 3 of the 10 folds; the
``residual`` map as the default of the ``quick`` and ``cpu`` presets; the fast solvers.
Validation uses the denoising loss on fixed noise (the paper does not say which quantity it
monitors). Images are mapped to the model's [-1, 1].
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor, nn

from anodiff.data.anomalies.pairs import CorruptedPairs
from anodiff.data.anomalies.tasks import IDENTITY_PROBABILITY, TaskFold, fold_tasks
from anodiff.data.anomalies.textures import texture_sources
from anodiff.diffusion.guidance import concat_condition, unet_eps
from anodiff.diffusion.objectives import FixedNoiseLoss
from anodiff.diffusion.samplers import sample
from anodiff.diffusion.seeding import seeded
from anodiff.diffusion.training import TrainConfig
from anodiff.errors import AnodiffError
from anodiff.methods.base import Detector, LocalizationConfig
from anodiff.methods.parts import (
    DiffusionPart,
    build_diffusion_unet,
    check_sampling_from_noise,
    train_diffusion_unet,
)
from anodiff.methods.registry import register
from anodiff.methods.results import RawResult
from anodiff.methods.training_data import split_validation, training_images
from anodiff.scoring.residuals import absolute_residual, ssim_anomaly_map

ALL_FOLDS = len(fold_tasks())  # 10: every 3-of-5 combination of Baugh's tasks


@dataclass(frozen=True)
class EnsemblePart:
    """Which task folds train members, and the data each member trains and stops on.

    ``folds`` are indices into :func:`~anodiff.data.anomalies.fold_tasks` (0..9, in
    ``itertools.combinations`` order of Baugh's tasks 0..4); ``None`` trains all ten.
    ``validation_images`` healthy validation slices (the dataset's ``val`` split, else held
    out of the training slices) are corrupted by a member's held-out tasks for its early
    stopping. Nested in the config because it shapes what was trained: changing it needs a
    new training run.
    """

    folds: tuple[int, ...] | None = None
    identity_probability: float = IDENTITY_PROBABILITY
    validation_images: int = 64

    def __post_init__(self) -> None:
        self.chosen()
        if not 0 <= self.identity_probability < 1:
            raise AnodiffError("identity_probability must be in [0, 1)")
        if self.validation_images < 1:
            raise AnodiffError("validation_images must be >= 1")

    def chosen(self) -> list[int]:
        """The fold indices that train members, checked."""
        folds = list(range(ALL_FOLDS)) if self.folds is None else list(self.folds)
        if not folds or len(set(folds)) != len(folds) or not all(
                0 <= f < ALL_FOLDS for f in folds):
            raise AnodiffError(f"folds must be distinct indices in "
                               f"[0, {ALL_FOLDS - 1}], got {self.folds}")
        return folds


@dataclass(frozen=True)
class ImgCondConfig(LocalizationConfig):
    """The conditional noise predictor, the fold ensemble, the sampler and the map.

    ``solver`` / ``steps`` / ``eta``: how each member restores, from pure noise at level T
    (``ddpm`` with ``eta = 1``: the paper's ancestral sampling, step-skipped to ``steps``
    hops). NFE per image = ``steps`` x members. ``map``: ``residual`` (``sum_c |x - x_hat|``,
    the default since it beat SSIM on pixel AP and best Dice on every track, 2-17x: docs/
    BENCHMARKS.md, issue 7 and issue 18) or ``ssim`` (the paper; the ``paper`` preset). The
    image score is the mean of the map (Baugh).
    """

    diffusion: DiffusionPart = field(default_factory=lambda: DiffusionPart(
        net="cpu", num_steps=1000, prediction="x0", train=TrainConfig(
            steps=500, batch_size=16, lr=1e-3, warmup_steps=50, ema_decay=0.995,
            checkpoint_every=100, validate_every=100, patience=3)))
    ensemble: EnsemblePart = field(default_factory=lambda: EnsemblePart(folds=(2, 5, 6)))
    solver: Literal["ddpm", "ddim", "dpmpp2m"] = "dpmpp2m"
    steps: int = 10
    eta: float = 1.0
    map: Literal["ssim", "residual"] = "residual"
    ssim_window: int = 11
    score: Literal["percentile", "mean", "top_k"] = "mean"

    def check(self) -> None:
        super().check()
        check_sampling_from_noise(self.diffusion, self.solver, self.steps, self.eta,
                                  "the restoration")
        if self.map not in ("ssim", "residual"):
            raise AnodiffError(f"map must be 'ssim' or 'residual', got {self.map!r}")


@register("imgcond")
class ImgCond(Detector[ImgCondConfig]):
    supervision = "self"
    reconstructs = True
    description = "image-conditioned diffusion restoring synthetic anomalies, task-fold " \
                  "ensemble, residual (or the paper's SSIM) map (Baugh 2024)"
    counted = ("members",)
    presets = {
        "quick": ImgCondConfig(
            diffusion=DiffusionPart(net="quick", num_steps=100, prediction="x0", train=TrainConfig(
                steps=40, batch_size=8, lr=3e-3, warmup_steps=5, ema_decay=None,
                checkpoint_every=10, validate_every=10, patience=2)),
            ensemble=EnsemblePart(folds=(2, 6), validation_images=8), steps=5,
            calibration_images=16),
        # 3 members x 500 steps of batch 16, early stopped on their held-out tasks. The
        # network predicts x0, not the noise: a CPU-trained eps model cannot restore from
        # pure noise (docs/methods/imgcond.md, "What differs").
        "cpu": ImgCondConfig(),
        # 6 solver steps per member (18 NFE): -0.009 / -0.006 pixel AP on the full tumour /
        # stroke splits, 3 steps -0.026 on tumour (docs/BENCHMARKS.md, "Issue 23, parts 7
        # and 9"; the card).
        "fast": ImgCondConfig(steps=6),
        # The authors' code: AdamW 1e-4, batch 16, EMA, gradient clipping 1; 10 members;
        # 50 DDPM steps. Their UNet is not specified in the project's sources: Wolleb's.
        "paper": ImgCondConfig(
            diffusion=DiffusionPart(
                net="paper", num_steps=1000, prediction="eps",
                train=TrainConfig(steps=100_000, batch_size=16, lr=1e-4, warmup_steps=0,
                                  ema_decay=0.9999, checkpoint_every=2000,
                                  validate_every=2000, patience=10)),
            ensemble=EnsemblePart(folds=None), solver="ddpm", steps=50, batch_size=16,
            map="ssim"),
    }

    def __init__(self, config: ImgCondConfig) -> None:
        super().__init__(config)
        self.folds = config.ensemble.chosen()
        self.schedule = config.diffusion.noise_schedule()

    def build(self, input_shape: tuple[int, ...]) -> None:
        super().build(input_shape)
        channels = self.input_shape[0]
        with seeded(self.config.seed):
            self.members = nn.ModuleList(
                build_diffusion_unet(self.config.diffusion, channels, cond_channels=channels)
                for _ in self.folds)

    def fit_parts(self, data: Any) -> None:
        """Train one member per fold on healthy slices, each early-stopped on its held-out
        tasks (checkpoints under ``run_dir/member_<fold>``, resumable member by member)."""
        healthy, _ = training_images(data, self.supervision)
        part, ensemble = self.config.diffusion, self.config.ensemble
        train, val = split_validation(self.name, data, healthy, ensemble.validation_images,
                                      part.train.seed)
        self.prepare(tuple(healthy.shape[1:]))
        textures = texture_sources(min(healthy.shape[-2:]))
        folds = fold_tasks()
        for k, index in enumerate(self.folds):
            fold: TaskFold = folds[index]
            pairs = CorruptedPairs(
                train.numpy(), fold.train, length=part.train.steps * part.train.batch_size,
                seed=(part.train.seed, index), other_source=textures, signed=True,
                identity_probability=ensemble.identity_probability)
            targets, conds = CorruptedPairs(
                val.numpy(), fold.held_out, length=len(val), seed=(part.train.seed, index, 1),
                identity_probability=0.0, other_source=textures, signed=True).stacked()
            validation = FixedNoiseLoss(self.schedule, targets, conds,
                                        prediction=part.prediction, seed=part.train.seed)
            self.members[k] = train_diffusion_unet(
                self.members[k], part, pairs, validation=validation, run_dir=self.run_dir,
                name=f"member_{index}")

    def restore(self, x: Tensor, generator: torch.Generator) -> tuple[Tensor, int]:
        """Every member's restoration of the batch ``x`` (M, N, C, H, W) in [0, 1], and the
        NFE per image of the whole ensemble; the noise is drawn member after member."""
        cfg = self.config
        cond = x * 2 - 1
        restored, nfe = [], 0
        for member in self.members:
            eps = concat_condition(unet_eps(member, cfg.diffusion.prediction, self.schedule),
                                   cond)
            out = sample(eps, tuple(cond.shape), self.schedule, cfg.steps, cfg.solver,
                         generator=generator, device=x.device, eta=cfg.eta)
            restored.append(((out.x + 1) / 2).clamp(0, 1))
            nfe += out.nfe
        return torch.stack(restored), nfe

    def member_maps(self, images: Tensor, restored: Tensor) -> Tensor:
        """Each member's map (M, N, H, W) of the configured kind (not yet post-processed)."""
        if self.config.map == "ssim":
            return torch.stack([ssim_anomaly_map(images, x_hat, self.config.ssim_window)
                                for x_hat in restored])
        return torch.stack([absolute_residual(images, x_hat) for x_hat in restored])

    def step(self, x: Tensor, generator: torch.Generator) -> RawResult:
        """The ensemble's mean map and restoration; the members' spread is the uncertainty."""
        restored, nfe = self.restore(x, generator)
        maps = self.member_maps(x, restored).to(x.device)
        return RawResult(anomaly_map=maps.mean(0), nfe=nfe, pseudo_healthy=restored.mean(0),
                         uncertainty=maps.std(0, correction=0) if len(maps) > 1 else None)
