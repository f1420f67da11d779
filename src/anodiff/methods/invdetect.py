"""``invdetect``: anomaly detection in the noise latent space of DDIM (Ma et al.).

InvDetect (Ma, Ma, He, Pei & Chu, "InvDetect: Unsupervised Medical Anomaly Detection in
the Noise Latent Space of DDIM") generates no pseudo-healthy image. It judges patches:

1. b x b patches by a sliding window with stride b / 2 (the last window snapped to the
   border), pixels scaled to [-1, 1];
2. a diffusion model trained on the patches of healthy images only;
3. DDIM inversion of every patch to its noise latent z = I(x) (deterministic; the
   DPM-Solver++ inverse is the fast option). Normal patches land near the Gaussian prior,
   abnormal ones drift away through accumulated inversion error (Sec. 2.1);
4. a one-class model of the normal latents — the paper's RBF one-class SVM (nu = 0.1,
   gamma = 1 / (d var z)) or the Gaussian (Mahalanobis) alternative it names; a patch's
   score is its signed distance to the boundary (> 0 outside);
5. the pixel map A by the Gaussian-weighted average of Eq. 1 (omega = b / 4);
6. the mask by spatial contiguity refinement (Eq. 2-4): an exact graph cut whose pairwise
   weights compare the per-pixel aggregates r_p of the latents, with tau and lambda set by
   the paper's rules on healthy training images (or given). Without refinement the mask is
   A > 0. This is the method's own mask rule (``mask: own``, the default); the shared
   ``otsu`` and ``healthy_fpr`` rules apply to A as to any map.

NFE: each inversion step evaluates the network on every foreground patch; one evaluation
of a b x b patch counts as (b x b) / (H x W) of an image evaluation, so the NFE per image is
``inversion_steps`` x the image's foreground patches x that share (about 2.2 x the steps at
b = H / 4, where the 49 overlapping patches hold ~3 x the image's pixels).

Scale (the issue's requirement): patches are inverted in batches; the one-class model is
fitted on ``fit_patches`` healthy patches drawn at random (the exact SVM's cost grows with
the square of their number) or, with ``one_class: ocsvm_nystroem``, on as many as wanted
through a Nystroem kernel approximation. Patches that hold no foreground pixel are neither
trained on nor inverted: every pixel of the brain lies in a patch that contains it, so the
map inside the brain is exactly the one of all patches. docs/methods/invdetect.md lists
what differs from the paper.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from anodiff.diffusion.guidance import unet_eps
from anodiff.diffusion.samplers import encode
from anodiff.diffusion.seeding import seeded
from anodiff.diffusion.training import TrainConfig
from anodiff.errors import AnodiffError
from anodiff.extras import require
from anodiff.methods.base import Detector, LocalizationConfig
from anodiff.methods.parts import DiffusionPart, build_diffusion_unet, train_diffusion_unet
from anodiff.methods.registry import register
from anodiff.methods.results import RawResult
from anodiff.methods.training_data import training_images
from anodiff.nets.builders import net_config
from anodiff.scoring.graphcut import (
    NeighbourDistances,
    calibrate_lambda,
    refine_masks,
    tau_from_normal,
)
from anodiff.scoring.one_class import ONE_CLASS_KINDS, OneClassModel, fit_one_class
from anodiff.scoring.patches import PatchGrid

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class InvDetectConfig(LocalizationConfig):
    """The patch diffusion model, the inversion, the one-class model and the refinement.

    The defaults are the ``cpu`` preset for 64² slices: b = 16 (the paper's b = 32 at 128²,
    the same quarter of the side), a ``small`` UNet, 20 DDIM steps inverting to level 250
    of T = 1000. The paper inverts to T; on the tumour track that separated lesions far
    worse (pixel AP 0.14 vs 0.59, docs/BENCHMARKS.md).
    """

    diffusion: DiffusionPart = field(default_factory=lambda: DiffusionPart(
        net="small", num_steps=1000, train=TrainConfig(
            steps=3000, batch_size=128, lr=1e-3, warmup_steps=50, ema_decay=0.995)))
    patch_size: int = 16  # b; stride b / 2, omega = b / 4
    level: int | None = 250  # the inversion's last level (None: T, pure noise, the paper)
    inversion_steps: int = 20  # the paper: 200 (of T = 1000)
    solver: Literal["ddim", "dpmpp2m"] = "ddim"
    one_class: Literal["ocsvm", "ocsvm_nystroem", "gaussian"] = "ocsvm"
    nu: float = 0.1
    fit_patches: int = 6000  # healthy training patches inverted to fit the one-class model
    nystroem_components: int = 1024  # kernel features of ocsvm_nystroem
    refine: bool = True  # spatial contiguity refinement (False: mask = A > 0)
    lam: float | None = None  # lambda (None: the paper's rule on healthy training images)
    tau: float | None = None  # tau (None: tau^2 = mean squared neighbour distance)
    max_false_area: float = 0.01  # the lambda rule's budget of flagged healthy pixels
    calibration_images: int = 32  # healthy training images tau and lambda are set on
    batch_size: int = 16  # images analysed at once (bounds the latent aggregate's memory)
    mask: Literal["otsu", "healthy_fpr", "own"] = "own"  # own: the graph cut (or A > 0)

    @staticmethod
    def upgrade_settings(values: dict[str, Any]) -> dict[str, Any]:
        """Settings written by earlier versions: ``image_batch`` is now the shared
        ``batch_size``."""
        values = dict(values)
        if "image_batch" in values:
            values["batch_size"] = values.pop("image_batch")
        return values

    def check(self) -> None:
        super().check()
        halvings = len(net_config(self.diffusion.net).channels) - 1
        if self.patch_size < 2**halvings or self.patch_size % 2**halvings:
            raise AnodiffError(f"patch_size must be a multiple of {2**halvings} (the "
                               f"{self.diffusion.net} UNet halves it {halvings} times), got "
                               f"{self.patch_size}")
        top = self.diffusion.num_steps
        if self.level is not None and not 1 <= self.level <= top:
            raise AnodiffError(f"level must be in [1, {top}], got {self.level}")
        if self.inversion_steps < 1:
            raise AnodiffError(f"inversion_steps must be >= 1, got {self.inversion_steps}")
        if self.one_class not in ONE_CLASS_KINDS:
            raise AnodiffError(f"one_class must be one of {list(ONE_CLASS_KINDS)}")
        if not 0 < self.nu < 1:
            raise AnodiffError(f"nu must be in (0, 1), got {self.nu}")
        for name in ("lam", "tau"):
            value = getattr(self, name)
            if value is not None and not value >= (0 if name == "lam" else 1e-12):
                raise AnodiffError(f"{name} must be positive, got {value}")
        if self.fit_patches < 2:
            raise AnodiffError(f"fit_patches must be >= 2, got {self.fit_patches}")
        if not 0 < self.max_false_area < 1:
            raise AnodiffError(f"max_false_area must be in (0, 1), got {self.max_false_area}")


@register("invdetect")
class InvDetect(Detector[InvDetectConfig]):
    supervision = "unsupervised"
    aggregatable = False
    description = "one-class SVM on DDIM-inverted patch latents + graph-cut refinement (Ma)"
    counted = ("unet",)
    # Its "small" UNet on 16 x 16 patches: a 100-slice case took 108 s under bfloat16
    # autocast against 58 s in float32 on the AMX Xeon (docs/BENCHMARKS.md, issue 23 part 8).
    bfloat16_pays = False
    # The one-class model, tau and lambda hold for any mask rule and any given lambda.
    state_free_settings = frozenset({"refine", "lam"})
    legacy_keys = {"tau": "fitted_tau", "lam": "fitted_lam", "one_class_kind": ""}
    presets = {
        "quick": InvDetectConfig(
            diffusion=DiffusionPart(net="quick", num_steps=100, train=TrainConfig(
                steps=60, batch_size=64, lr=3e-3, warmup_steps=5, ema_decay=None)),
            patch_size=8, level=30, inversion_steps=5, fit_patches=400, calibration_images=8),
        "cpu": InvDetectConfig(),
        # 5 DDIM inversion steps instead of 20: 5, 10 and 20 gave the same pixel AP on 48
        # tumour slices (0.583-0.587; the card), at 0.15 s per slice against 0.48 s.
        "fast": InvDetectConfig(inversion_steps=5),
        # The paper at 128²: b = 32, T = 1000, DDIM inversion in 200 steps, Adam lr 1e-3,
        # a four-stage UNet with 64 base channels (the authors' first release).
        "paper": InvDetectConfig(
            diffusion=DiffusionPart(net="invdetect", num_steps=1000, train=TrainConfig(
                steps=100_000, batch_size=64, lr=1e-3, warmup_steps=0, ema_decay=0.9999,
                checkpoint_every=2000)),
            patch_size=32, level=None, inversion_steps=200, fit_patches=20_000,
            one_class="ocsvm_nystroem", nystroem_components=4096),
    }

    def __init__(self, config: InvDetectConfig) -> None:
        super().__init__(config)
        self.schedule = config.diffusion.noise_schedule()
        if config.mask == "own" and config.refine:  # refused now, not after training
            require("maxflow", "graphcut", "invdetect's graph-cut refinement (mask: own, "
                    "refine: true; refine: false or mask: otsu need none)")

    # --- networks and state --------------------------------------------------------------
    def build(self, input_shape: tuple[int, ...]) -> None:
        super().build(input_shape)
        channels, *spatial = self.input_shape
        if len(spatial) != 2:
            raise AnodiffError(f"invdetect works on 2-D slices (C, H, W), got {input_shape}")
        with seeded(self.config.seed):
            self.unet = build_diffusion_unet(self.config.diffusion, channels)
        self.one_class = OneClassModel(self.config.one_class)
        nan = torch.tensor(float("nan"))
        self.register_buffer("fitted_tau", nan.clone())
        self.register_buffer("fitted_lam", nan.clone())
        self.register_buffer("calibrated_area", nan.clone())

    def fitted_state(self) -> bool:
        return self.one_class.fitted

    @property
    def grid(self) -> PatchGrid:
        """The sliding windows on the fitted image size."""
        assert self.input_shape is not None
        return PatchGrid.create(self.input_shape[1:], self.config.patch_size)

    @property
    def tau(self) -> float:
        return float(self.config.tau if self.config.tau is not None else self.fitted_tau)

    @property
    def lam(self) -> float:
        return float(self.config.lam if self.config.lam is not None else self.fitted_lam)

    # --- the paper's stages --------------------------------------------------------------
    def patches(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """Patches (N, P, C, b, b) in [-1, 1] and which of them hold foreground (N, P)."""
        grid = self.grid
        fg = self.brain(images)[:, None].float()
        holds_brain = grid.extract(fg).flatten(2).amax(-1) > 0
        return grid.extract(images * 2 - 1), holds_brain

    def foreground_patches(self, images: Tensor) -> Tensor:
        """The patches (M, C, b, b) of images that hold foreground: what is trained on."""
        patches, holds_brain = self.patches(images)
        return patches[holds_brain]

    def normality_draws(self, patches: int, images: int) -> tuple[Tensor, Tensor]:
        """The seeded choice of ``fit_patches`` of ``patches`` foreground patches for the
        one-class fit and of ``calibration_images`` of ``images`` images for tau and lambda."""
        generator = torch.Generator().manual_seed(self.config.seed)
        pick = torch.randperm(patches, generator=generator)[: self.config.fit_patches]
        chosen = torch.randperm(images, generator=generator)[: self.config.calibration_images]
        return pick, chosen

    @torch.no_grad()
    def invert(self, patches: Tensor) -> Tensor:
        """Noise latents (M, C b b) of patches (M, C, b, b) in [-1, 1] (Sec. 2.1, I_theta),
        on the patches' device."""
        cfg = self.config
        if len(patches) == 0:
            return patches.new_zeros(0, int(np.prod(patches.shape[1:])))
        level = cfg.level or self.schedule.num_steps
        out = encode(unet_eps(self.unet), patches.to(self.device), self.schedule, level,
                     cfg.inversion_steps, cfg.solver)
        return out.x.flatten(1).to(patches.device)

    def fit_parts(self, data: Any) -> None:
        """Train on healthy patches, then fit the one-class model and set tau and lambda."""
        images, _ = training_images(data, self.supervision)
        self.prepare(tuple(images.shape[1:]))
        normal = self.foreground_patches(images)
        if len(normal) < 2:
            raise AnodiffError("invdetect: the healthy training images hold fewer than two "
                               "patches with foreground")
        self.unet = train_diffusion_unet(self.unet, self.config.diffusion, normal,
                                         run_dir=self.run_dir, name="unet")
        self.fit_normality(data)

    def fit_normality(self, data: Any) -> None:
        """Fit the one-class model on inverted healthy patches, then set tau and lambda.

        ``fit_patches`` of the foreground patches of the healthy training slices of ``data``
        (a seeded random draw) are inverted for the one-class fit and ``calibration_images``
        of those slices set tau and lambda. Called after training; calling it again after a
        retune (``anodiff export --refit``) refits what depends on the settings.
        """
        cfg = self.config
        healthy, _ = training_images(data, self.supervision)
        normal = self.foreground_patches(healthy)
        pick, chosen = self.normality_draws(len(normal), len(healthy))
        latents = torch.cat([self.invert(chunk) for chunk in normal[pick].split(1024)])
        self.one_class = fit_one_class(latents, cfg.one_class, cfg.nu,
                                       components=cfg.nystroem_components,
                                       seed=cfg.seed).to(self.device)
        self.calibrate_refinement(healthy[chosen])

    def calibrate_refinement(self, healthy: Tensor) -> None:
        """tau and lambda by the paper's rules on healthy images (N, C, H, W) in [0, 1]."""
        done = self.process(healthy)
        distances = neighbour_distances(done.raw)
        region = done.foreground.numpy()
        self.fitted_tau.fill_(tau_from_normal(distances, region))
        choice = calibrate_lambda(done.anomaly_map.numpy(), distances, self.tau, region,
                                  self.config.max_false_area)
        self.fitted_lam.fill_(choice.lam)
        self.calibrated_area.fill_(choice.area)
        if not choice.within_budget:
            log.warning(
                "invdetect: no lambda keeps the flagged healthy area within %.1f %% (the "
                "one-class boundary alone flags %.1f %%); took lambda = %g, which flags "
                "%.1f %% (areas per lambda: %s)", 100 * self.config.max_false_area,
                100 * choice.areas[0.0], choice.lam, 100 * choice.area,
                ", ".join(f"{k:g}: {100 * v:.1f} %" for k, v in choice.areas.items()))

    def step(self, x: Tensor, generator: torch.Generator) -> RawResult:
        """Invert every patch that holds foreground, score it, and project the scores and
        the latents to pixels (Eq. 1); the latents' neighbour distances travel to the
        graph cut as extras."""
        if not self.one_class.fitted or self.one_class.kind != self.config.one_class:
            raise AnodiffError(f"invdetect: no fitted {self.config.one_class} one-class model "
                               "(the settings changed it); refit it (refit(data), or anodiff "
                               "export --refit DATA)")
        patches, holds_brain = self.patches(x)
        latents = self.invert(patches[holds_brain])
        scores = self.one_class.score(latents).to(latents)
        values = latents.new_zeros(*holds_brain.shape, 1 + latents.shape[1])
        values[holds_brain] = torch.cat([scores[:, None], latents], 1)
        pixels, _ = self.grid.aggregate(values, holds_brain)
        distances = NeighbourDistances.of(pixels[:, 1:])
        b, (h, w) = self.config.patch_size, self.input_shape[1:]
        nfe = self.config.inversion_steps * int(holds_brain.sum()) * b * b / (len(x) * h * w)
        return RawResult(anomaly_map=pixels[:, 0], nfe=nfe, extras={
            "right": torch.from_numpy(distances.right), "down": torch.from_numpy(distances.down)})

    def own_mask(self, maps: Tensor, fg: Tensor, raw: RawResult) -> Tensor:
        """The graph cut of Eq. 2 (or A > 0 without refinement)."""
        if not self.config.refine:
            return (maps > 0) & fg
        return torch.from_numpy(refine_masks(maps.numpy(), neighbour_distances(raw), self.tau,
                                             self.lam, fg.numpy()))


def neighbour_distances(raw: RawResult) -> NeighbourDistances:
    """The latent aggregates' neighbour distances a :meth:`InvDetect.step` carried."""
    return NeighbourDistances(raw.extras["right"].numpy(), raw.extras["down"].numpy())
