"""Few-step students: progressive distillation of a DDIM decoder on one level segment
(Salimans & Ho 2022, "Progressive Distillation for Fast Sampling of Diffusion Models").

A reconstruction method decodes from its level L to clean data in ``teacher_steps`` DDIM
hops (:func:`~.samplers.level_sequence`). Progressive distillation trains a student that
does in one hop what the teacher does in two, starting from the teacher's weights, then
makes the student the next teacher: ``teacher_steps -> /2 -> /2 ... -> steps``. Each
halving's training step (Salimans & Ho, Alg. 2):

1. draw clean training images ``x0``, a hop ``k`` of the student's grid uniformly, and
   ``x_t = q_sample(x0, t_k, z)`` with noise ``z`` of the model's own kind (Gaussian or
   AnoDDPM's simplex) — the states the decoder meets at level ``t_k``;
2. the teacher takes two DDIM hops ``t_k -> t_mid -> t_{k+1}`` (its grid is the student's
   with every hop halved, so ``t_k`` and ``t_{k+1}`` are on both);
3. the target is the clean image ``x~0`` for which *one* DDIM hop ``t_k -> t_{k+1}`` from
   ``x_t`` lands where the teacher did:
   ``x~0 = (x_next - (sigma_next / sigma_t) x_t) / (alpha_next - (sigma_next / sigma_t) alpha_t)``
   (``x~0 = x_next`` on the last hop, where ``sigma_next = 0``);
4. the loss is ``max(SNR(t_k), 1) ||x0_student - x~0||^2`` with ``x0_student`` from the
   student's noise prediction: the paper's "truncated SNR" weighting, which is the usual
   noise-prediction loss wherever ``SNR >= 1``.

A guided decoder distils the same way (Meng et al. 2023, "On Distillation of Guided
Diffusion Models"): the first halving's teacher is the method's own guided predictor (the
counterfactual method's classifier-free guidance, two evaluations per hop), and the student
is the class-conditional network evaluated under the healthy label alone, starting from the
teacher's weights, so that each student hop costs one evaluation instead of two. Meng et al.
first train a student to match the guided noise prediction level by level and then halve;
here the first halving does both at once (one training run fewer on a CPU; the card says
what it gives).

What is changed from the paper, and why: the paper distils the whole trajectory [0, T] and
therefore switches the network to ``v``- or ``x``-prediction, because a noise prediction
cannot give ``x0`` at ``alpha ~ 0``. An anomaly method only ever decodes from its own L
(AnoDDPM: 100-250 of 1000, ``alpha >= 0.72`` on the linear schedule), so the student learns
that segment only and keeps the teacher's noise prediction: it stays a drop-in replacement
for the teacher's network, used with the package's own DDIM sampler on the coarse grid, and
costs ``steps`` network evaluations per slice. Progressive rather than consistency
distillation (Song 2023) because each halving starts from a network that is already
right at its own step count (each halving is a fine-tune from a good start), whereas a
consistency model must learn a one-jump map against a moving EMA target.

Written here because neither MONAI nor diffusers ships a distillation trainer for
arbitrary UNets (diffusers' examples are scripts for its own pipelines). The training loop
is the package's :class:`~.training.Trainer`: each halving checkpoints into its own folder
and resumes exactly.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from anodiff.diffusion.guidance import EpsFn, unet_eps
from anodiff.diffusion.noise import draw_noise
from anodiff.diffusion.samplers import level_sequence
from anodiff.diffusion.schedule import NoiseSchedule
from anodiff.diffusion.training import SampleSource, TrainConfig, Trainer, TrainHistory
from anodiff.errors import AnodiffError

log = logging.getLogger("anodiff")


# How a student network is evaluated as a noise predictor (unet_eps: plainly; a
# class-conditional student: under its fixed label).
AsEps = Callable[[nn.Module], EpsFn]


@dataclass(frozen=True)
class DecoderSegment:
    """What a method decodes with, as a distillation needs it: the decoder's noise predictor
    (``teacher``, as the method calls it: guided where the method guides), the network the
    student starts from and how the method will evaluate it (``as_eps``), the schedule, the
    level L it decodes from, its own hop count, and the kind of noise its states carry."""

    teacher: EpsFn
    start: nn.Module
    schedule: NoiseSchedule
    level: int
    steps: int
    noise: str = "gaussian"
    noise_options: dict[str, float] = field(default_factory=dict)
    as_eps: AsEps = unet_eps


@runtime_checkable
class Distillable(Protocol):
    """A detector whose decoder is one trajectory from its level to clean data, which a
    few-step student network can replace."""

    def decoder_segment(self) -> DecoderSegment:
        """The decoder to distil (a named error when the current settings have none)."""
        ...

    def distillation_images(self, data: Any) -> Tensor:
        """The training images of ``data`` the student learns from (N, C, H, W), in the
        range the decoder's network works in."""
        ...

    def with_student(self, student: nn.Module, steps: int) -> Any:
        """A detector sharing this one's networks that decodes with ``student`` in ``steps``
        DDIM hops (its fitted values still to be refitted)."""
        ...


def halvings(teacher_steps: int, steps: int) -> int:
    """How many halvings take ``teacher_steps`` hops to ``steps`` (a named error unless
    ``teacher_steps = steps * 2^k`` with ``k >= 1``)."""
    if steps < 1 or teacher_steps <= steps or teacher_steps % steps:
        raise AnodiffError(f"distillation halves the hops: teacher_steps ({teacher_steps}) "
                           f"must be steps ({steps}) times a power of two, and larger")
    ratio = teacher_steps // steps
    if ratio & (ratio - 1):
        raise AnodiffError(f"teacher_steps / steps = {ratio} is not a power of two; use "
                           f"{steps * 2 ** math.ceil(math.log2(ratio))} or "
                           f"{steps * 2 ** math.floor(math.log2(ratio))} teacher steps")
    return int(math.log2(ratio))


def teacher_steps_for(steps: int, method_steps: int, level: int) -> int:
    """The teacher's hop count for a ``steps``-hop student of a method that decodes from
    ``level`` in ``method_steps`` hops: the first ``steps * 2^k`` (``k >= 1``) at or above
    the method's count, but no more hops than there are levels."""
    k = max(1, math.ceil(math.log2(max(method_steps, steps + 1) / steps)))
    while k > 1 and steps * 2**k > level:
        k -= 1
    return steps * 2**k


def hop_grids(level: int, steps: int) -> tuple[Tensor, Tensor]:
    """The student's levels (``steps + 1``, from ``level`` down to 0) and its teacher's
    (``2 steps + 1``); every student level is a teacher level."""
    if 2 * steps > level:
        raise AnodiffError(f"{2 * steps} teacher hops from L = {level} need more levels than "
                           "there are; distil to fewer steps or from a higher L")
    student = torch.tensor(level_sequence(level, 0, steps))
    teacher = torch.tensor(level_sequence(level, 0, 2 * steps))
    if not torch.equal(teacher[::2], student):  # rounding of the two linspaces
        raise AnodiffError(f"the {steps}- and {2 * steps}-hop grids from L = {level} do not "
                           "share their levels")
    return student, teacher


def halving_plan(level: int, teacher_steps: int, steps: int) -> list[int]:
    """The student hop counts of each halving (``teacher_steps / 2, ..., steps``), checked:
    a named error before any training when the hops are not halvings or do not fit in L."""
    count = halvings(teacher_steps, steps)
    plan = [teacher_steps // 2 ** (index + 1) for index in range(count)]
    for student_steps in plan:
        hop_grids(level, student_steps)
    return plan


def ddim_hop(x: Tensor, eps: Tensor, start: Tensor, end: Tensor, schedule: NoiseSchedule
             ) -> Tensor:
    """One DDIM hop (``sigma = 0``) per sample, from levels ``start`` to ``end`` (N,): the
    update of :func:`~.solvers.ddim`, with a level per image."""
    alpha_to, sigma_to = schedule.alpha_sigma(end, x)
    return alpha_to * schedule.predict_x0(x, start, eps) + sigma_to * eps


@dataclass(frozen=True)
class ProgressiveObjective:
    """One halving's loss (module docstring, steps 1-4): the student network, evaluated as
    ``as_eps(model)``, with ``steps`` hops from ``level``, matches two hops of the frozen
    ``teacher`` noise predictor."""

    teacher: EpsFn
    schedule: NoiseSchedule
    level: int
    steps: int
    noise: str = "gaussian"
    noise_options: dict[str, float] = field(default_factory=dict)
    as_eps: AsEps = unet_eps

    def __post_init__(self) -> None:
        self.schedule.check_level(self.level)
        hop_grids(self.level, self.steps)  # refuses impossible grids before training

    def __call__(self, model: nn.Module, batch: dict[str, Tensor], generator: torch.Generator
                 ) -> Tensor:
        x0 = batch["image"]
        student, teacher = hop_grids(self.level, self.steps)
        hop = torch.randint(0, self.steps, (len(x0),), generator=generator)
        start, middle, end = student[hop], teacher[2 * hop + 1], student[hop + 1]
        z = draw_noise(self.noise, tuple(x0.shape), level=start, generator=generator,
                       dtype=x0.dtype, **self.noise_options).to(x0.device)
        start, middle, end = (v.to(x0.device) for v in (start, middle, end))
        x_t = self.schedule.q_sample(x0, start, z)
        with torch.no_grad():
            x_mid = ddim_hop(x_t, self.teacher(x_t, start), start, middle, self.schedule)
            x_end = ddim_hop(x_mid, self.teacher(x_mid, middle), middle, end, self.schedule)
            target = self.one_hop_x0(x_t, x_end, start, end)
        predicted = self.schedule.predict_x0(x_t, start, self.as_eps(model)(x_t, start))
        alpha, sigma = self.schedule.alpha_sigma(start, x0)
        weight = (alpha.square() / sigma.square()).clamp(min=1.0)
        return (weight * (predicted - target).square()).mean()

    def one_hop_x0(self, x_t: Tensor, x_end: Tensor, start: Tensor, end: Tensor) -> Tensor:
        """The clean image whose DDIM hop ``start -> end`` from ``x_t`` gives ``x_end``."""
        alpha_t, sigma_t = self.schedule.alpha_sigma(start, x_t)
        alpha_e, sigma_e = self.schedule.alpha_sigma(end, x_t)
        ratio = sigma_e / sigma_t
        return (x_end - ratio * x_t) / (alpha_e - ratio * alpha_t)

    def describe(self) -> dict[str, Any]:
        """JSON-friendly settings, stored in checkpoints."""
        return {"objective": "progressive distillation", "level": self.level,
                "steps": self.steps, "noise": self.noise, "noise_options": self.noise_options,
                "schedule": self.schedule.to_dict()}


@dataclass
class DistillationHistory:
    """What :func:`distil` did, halving by halving."""

    stages: list[dict[str, Any]] = field(default_factory=list)

    def add(self, steps: int, history: TrainHistory) -> None:
        losses = history.losses
        self.stages.append({"steps": steps, "trained_steps": len(losses),
                            "first_loss": losses[0] if losses else None,
                            "last_loss": losses[-1] if losses else None,
                            "seconds": history.seconds})

    @property
    def seconds(self) -> float:
        return sum(stage["seconds"] for stage in self.stages)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly record (for run.yaml)."""
        return {"halvings": [dict(stage) for stage in self.stages],
                "seconds": round(self.seconds, 1)}


def distil(
    start: nn.Module,
    data: SampleSource,
    schedule: NoiseSchedule,
    *,
    level: int,
    teacher_steps: int,
    steps: int,
    config: TrainConfig,
    teacher: EpsFn | None = None,
    as_eps: AsEps = unet_eps,
    noise: str = "gaussian",
    noise_options: dict[str, float] | None = None,
    run_dir: Path | None = None,
    progress: bool = True,
) -> tuple[nn.Module, DistillationHistory]:
    """A ``steps``-hop student of a decoder from ``level`` (DDIM in ``teacher_steps`` hops),
    by progressive halving, each halving ``config.steps`` training steps on ``data`` (clean
    images in [-1, 1] under ``image``).

    The first student is a copy of ``start``, evaluated as ``as_eps(network)``; the first
    halving's teacher is ``teacher`` (default: ``as_eps(start)``, the network itself; a
    guided predictor for a student that folds the guidance in). Halving ``i`` checkpoints
    into ``run_dir/halving-<i>-<steps>`` and resumes there; the student of one halving (its
    EMA weights, when ``config.ema_decay`` is set) is the next one's teacher. ``start`` itself
    is left unchanged.
    """
    current = copy.deepcopy(start).eval().requires_grad_(False)
    predictor = teacher if teacher is not None else as_eps(current)
    history = DistillationHistory()
    for index, target in enumerate(halving_plan(level, teacher_steps, steps)):
        objective = ProgressiveObjective(predictor, schedule, level, target, noise,
                                         dict(noise_options or {}), as_eps)
        student = copy.deepcopy(current).requires_grad_(True)
        folder = None if run_dir is None else Path(run_dir) / f"halving-{index + 1}-{target}"
        log.info("distillation: %d -> %d hops from L = %d", 2 * target, target, level)
        trainer = Trainer(student, objective, config, folder,
                          {"distillation": {**objective.describe(), "halving": index + 1}},
                          progress)
        history.add(target, trainer.fit(data))
        current = copy.deepcopy(trainer.final_model()).eval().requires_grad_(False)
        predictor = as_eps(current)
    return current, history
