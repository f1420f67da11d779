"""The healthy-prior DDPM that AnoDDPM, THOR and AutoDDPM share: one model, three decoders.

AnoDDPM (Wyatt 2022), THOR (Bercea 2024) and AutoDDPM (Bercea 2023a) train the same thing —
a DDPM on healthy slices with Gaussian or simplex noise, levels up to ``diffusion.max_level``
— and differ only in how they go from the noised image back to a pseudo-healthy one.
:class:`NoisedDDPM` holds what they share (the config of the model, its noise and the plain
forward-backward pass; building, training, the simplex settings); each method adds its
``step``. Because the trained parts are identical, a trained AnoDDPM can be exported as THOR
or AutoDDPM (``anodiff export --method``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from anodiff.diffusion.seeding import seeded
from anodiff.diffusion.translation import Denoising, Noising, Translator
from anodiff.errors import AnodiffError
from anodiff.methods.base import Detector, LocalizationConfig
from anodiff.methods.parts import DiffusionPart, build_diffusion_unet, train_diffusion_unet
from anodiff.methods.training_data import training_images


@dataclass(frozen=True)
class AnoDDPMConfig(LocalizationConfig):
    """The diffusion model, the test-time corruption and the decoder (and, from
    :class:`~anodiff.methods.base.LocalizationConfig`, the map's post-processing, mask and
    score: smoothing 1 px and the healthy-FPR mask by default).

    ``octaves`` / ``frequency`` of the simplex noise default to the image size: the first
    octave's period is a quarter of the image side (AnoDDPM: 64 px at 256²) and octaves are
    added down to a finest period of 2 px (6 octaves at 256², 4 at 64²).
    """

    diffusion: DiffusionPart = field(default_factory=lambda: DiffusionPart(
        net="cpu", num_steps=1000, max_level=400))
    noise: Literal["simplex", "gaussian"] = "simplex"
    octaves: int | None = None  # simplex octaves (None: down to a 2-pixel period)
    persistence: float = 0.8  # amplitude ratio between successive simplex octaves
    frequency: float | None = None  # period in pixels of the first octave (None: side / 4)
    level: int = 100  # L, the test-time noise level (the paper: 250; 100 measured best here)
    steps: int = 25  # decoder hops from L to 0 (>= L: every level, as AnoDDPM)
    solver: Literal["ddpm", "ddim", "dpmpp2m"] = "ddpm"
    eta: float = 1.0  # stochasticity of the ddpm solver (1: ancestral sampling)
    smoothing_sigma: float = 1.0
    mask: Literal["otsu", "healthy_fpr", "own"] = "healthy_fpr"

    def check(self) -> None:
        super().check()
        part = self.diffusion
        top = part.max_level or part.num_steps
        for level in (self.level, *self.levels):
            if not 1 <= level <= top:
                raise AnodiffError(f"level must be in [1, {top}] (the levels the model is "
                                   f"trained on, diffusion.max_level), got {level}")
        if self.steps < 1:
            raise AnodiffError(f"steps must be >= 1, got {self.steps}")
        if self.octaves is not None and self.octaves < 1:
            raise AnodiffError(f"octaves must be >= 1, got {self.octaves}")
        if self.frequency is not None and not self.frequency > 0:
            raise AnodiffError(f"frequency must be > 0, got {self.frequency}")
        if not 0 < self.persistence <= 1 or not self.eta >= 0:
            raise AnodiffError("need 0 < persistence <= 1 and eta >= 0")


def noise_options(config: AnoDDPMConfig, size: int) -> dict[str, float]:
    """Simplex settings for images whose shorter side is ``size`` pixels ({} for Gaussian).

    AnoDDPM's 6 octaves, persistence 0.8 and a first period of 64 px are for 256² slices;
    scaled to the image, the first period is ``size / 4`` and, unless set, octaves halve the
    period down to 2 px, so that none falls below the pixel grid at small sizes.
    """
    if config.noise == "gaussian":
        return {}
    frequency = config.frequency if config.frequency is not None else size / 4
    octaves = config.octaves
    if octaves is None:
        octaves = max(1, min(6, math.floor(math.log2(max(frequency, 2.0) / 2)) + 1))
    return {"octaves": octaves, "persistence": config.persistence, "frequency": frequency}


ConfigT = TypeVar("ConfigT", bound=AnoDDPMConfig)


class NoisedDDPM(Detector[ConfigT]):
    """A detector on a DDPM trained on healthy slices with the configured noise; subclasses
    write ``step`` (the decoder and the map)."""

    level_setting = "level"
    reconstructs = True
    counted = ("unet",)

    def __init__(self, config: ConfigT) -> None:
        super().__init__(config)
        self.schedule = config.diffusion.noise_schedule()

    def build(self, input_shape: tuple[int, ...]) -> None:
        super().build(input_shape)
        with seeded(self.config.seed):
            self.unet = build_diffusion_unet(self.config.diffusion, self.input_shape[0])

    def noise_options(self) -> dict[str, float]:
        """The simplex settings for the fitted image size."""
        assert self.input_shape is not None
        return noise_options(self.config, min(self.input_shape[1:]))

    def fit_parts(self, data: Any) -> None:
        """Train the DDPM on healthy training slices (with the configured noise)."""
        images, _ = training_images(data, self.supervision)
        self.prepare(tuple(images.shape[1:]))
        self.unet = train_diffusion_unet(
            self.unet, self.config.diffusion, images * 2 - 1, noise=self.config.noise,
            noise_options=self.noise_options(), run_dir=self.run_dir, name="unet")

    def translator(self) -> Translator:
        """AnoDDPM's forward-backward pass: noise to L with the configured noise, decode to 0
        drawing the same kind of noise in every ancestral step (the level is simplex noise's
        third coordinate)."""
        c, options = self.config, self.noise_options()
        return Translator(Noising(c.level, c.noise, options),
                          Denoising(c.level, c.steps, c.solver, c.eta, c.noise, options))

