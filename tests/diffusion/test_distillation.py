"""Progressive distillation against closed forms.

For Gaussian data the optimal noise predictor is affine in ``x`` (conftest's
``GaussianOracle``), and so is every DDIM hop with it: a student that is affine per level
can match any number of teacher hops exactly. Distilling the oracle's 4-hop DDIM decoder
into one hop must therefore reproduce the 4-hop output, which one plain hop misses by far.
The same holds for a classifier-free-guided decoder of class-conditional affine predictors
(the guided noise prediction is affine too): a one-evaluation student under the healthy
label must reproduce the guided four hops, which the healthy model alone misses.
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from anodiff.diffusion.distillation import (
    ProgressiveObjective,
    distil,
    halvings,
    hop_grids,
    teacher_steps_for,
)
from anodiff.diffusion.guidance import class_conditioned, unet_eps
from anodiff.diffusion.samplers import decode
from anodiff.diffusion.schedule import NoiseSchedule
from anodiff.diffusion.training import ArrayDataset, TrainConfig
from anodiff.errors import AnodiffError


class AffineEps(nn.Module):
    """``eps(x, t) = slope[t] x + offset[t]``, a pair per network timestep, starting as the
    exact predictor for x0 ~ N(mu, s^2): ``sigma (x - a mu) / (a^2 s^2 + sigma^2)``."""

    def __init__(self, schedule: NoiseSchedule, mu: float, s: float) -> None:
        super().__init__()
        levels = torch.arange(1, schedule.num_steps + 1)
        abar = schedule.abar[levels]
        a, sigma = abar.sqrt(), (1 - abar).sqrt()
        denominator = a**2 * s**2 + sigma**2
        self.slope = nn.Parameter((sigma / denominator).float())
        self.offset = nn.Parameter((-sigma * a * mu / denominator).float())

    def forward(self, x: Tensor, timesteps: Tensor, class_labels: Tensor | None = None
                ) -> Tensor:
        shape = (-1,) + (1,) * (x.dim() - 1)
        return self.slope[timesteps].view(shape) * x + self.offset[timesteps].view(shape)


MU, S, LEVEL = 0.3, 0.5, 200


def gaussian_images(count: int, seed: int) -> Tensor:
    generator = torch.Generator().manual_seed(seed)
    return MU + S * torch.randn(count, 1, 4, 4, generator=generator)


def test_halvings_and_grids() -> None:
    assert halvings(8, 2) == 2 and halvings(32, 1) == 5
    for teacher, student in ((6, 2), (2, 2), (3, 2), (12, 4)):
        with pytest.raises(AnodiffError):
            halvings(teacher, student)
    assert teacher_steps_for(2, 25, level=100) == 32  # the first 2 * 2^k at or above 25
    assert teacher_steps_for(2, 25, level=25) == 16  # not more hops than levels
    assert teacher_steps_for(4, 2, level=100) == 8  # at least one halving
    student, teacher = hop_grids(100, 2)
    assert student.tolist() == [100, 50, 0] and teacher.tolist() == [100, 75, 50, 25, 0]
    with pytest.raises(AnodiffError, match="levels"):
        hop_grids(10, 8)


def test_the_target_is_the_clean_image_whose_one_hop_lands_on_the_teachers(
        linear_schedule: NoiseSchedule) -> None:
    objective = ProgressiveObjective(unet_eps(AffineEps(linear_schedule, MU, S)),
                                     linear_schedule, LEVEL, steps=2)
    x0, x_t = torch.randn(3, 1, 4, 4), torch.randn(3, 1, 4, 4)
    start, end = torch.tensor([200, 200, 100]), torch.tensor([100, 100, 0])
    alpha_t, sigma_t = linear_schedule.alpha_sigma(start, x_t)
    alpha_e, sigma_e = linear_schedule.alpha_sigma(end, x_t)
    eps = (x_t - alpha_t * x0) / sigma_t  # the noise direction that x0 implies
    landed = alpha_e * x0 + sigma_e * eps  # one DDIM hop with that x0
    assert torch.allclose(objective.one_hop_x0(x_t, landed, start, end), x0, atol=1e-4)


def test_a_student_equal_to_an_exact_teacher_has_nothing_to_learn_on_a_point_mass(
        linear_schedule: NoiseSchedule) -> None:
    """With all data at one point the oracle's DDIM is exact at any hop count, so two hops
    equal one and the loss of the teacher itself is zero."""
    teacher = AffineEps(linear_schedule, MU, 1e-4)
    objective = ProgressiveObjective(unet_eps(teacher), linear_schedule, LEVEL, steps=2)
    batch = {"image": torch.full((8, 1, 4, 4), MU)}
    loss = objective(AffineEps(linear_schedule, MU, 1e-4), batch, torch.Generator())
    assert float(loss.detach()) < 1e-6


def test_distilling_four_oracle_hops_into_one_reproduces_them(
        linear_schedule: NoiseSchedule) -> None:
    teacher = AffineEps(linear_schedule, MU, S)
    config = TrainConfig(steps=300, batch_size=64, lr=0.02, warmup_steps=0, ema_decay=None,
                         grad_clip=None)
    student, history = distil(teacher, ArrayDataset(gaussian_images(512, 1)), linear_schedule,
                              level=LEVEL, teacher_steps=4, steps=1, config=config,
                              progress=False)
    assert [stage["steps"] for stage in history.stages] == [2, 1]
    assert all(stage["last_loss"] < stage["first_loss"] for stage in history.stages)
    x0 = gaussian_images(256, 2)
    x_l = linear_schedule.q_sample(x0, LEVEL, torch.randn(x0.shape,
                                                          generator=torch.Generator().manual_seed(3)))
    with torch.no_grad():
        four = decode(unet_eps(teacher), x_l, linear_schedule, LEVEL, 4, "ddim").x
        one = decode(unet_eps(teacher), x_l, linear_schedule, LEVEL, 1, "ddim").x
        distilled = decode(unet_eps(student), x_l, linear_schedule, LEVEL, 1, "ddim").x
    plain_error = (one - four).abs().mean()
    assert plain_error > 0.05  # one plain hop is far from four
    assert (distilled - four).abs().mean() < 0.05 * plain_error
    assert torch.equal(teacher.slope, AffineEps(linear_schedule, MU, S).slope)  # untouched


def test_checkpoints_per_halving_and_resume(linear_schedule: NoiseSchedule, tmp_path) -> None:
    teacher = AffineEps(linear_schedule, MU, S)
    data = ArrayDataset(gaussian_images(64, 4))
    config = TrainConfig(steps=6, batch_size=8, lr=0.01, warmup_steps=0, ema_decay=None,
                         checkpoint_every=3)
    first, _ = distil(teacher, data, linear_schedule, level=LEVEL, teacher_steps=4, steps=1,
                      config=config, run_dir=tmp_path, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["halving-1-2", "halving-2-1"]
    again, history = distil(teacher, data, linear_schedule, level=LEVEL, teacher_steps=4,
                            steps=1, config=config, run_dir=tmp_path, progress=False)
    assert all(stage["trained_steps"] == 0 for stage in history.stages)  # all resumed
    assert torch.equal(first.slope, again.slope)


class ClassAffineEps(nn.Module):
    """:class:`AffineEps` per class label (0 healthy, 1 anomalous, 2 null): the exact
    predictor of N(mu_c, s_c^2) data for each, as a class-conditional network."""

    def __init__(self, schedule: NoiseSchedule, classes: list[tuple[float, float]]) -> None:
        super().__init__()
        self.classes = nn.ModuleList(AffineEps(schedule, mu, s) for mu, s in classes)

    def forward(self, x: Tensor, timesteps: Tensor, class_labels: Tensor | None = None
                ) -> Tensor:
        assert class_labels is not None
        out = torch.empty_like(x)
        for label, predictor in enumerate(self.classes):
            rows = class_labels == label
            if rows.any():
                out[rows] = predictor(x[rows], timesteps[rows])
        return out


def test_a_one_evaluation_student_folds_classifier_free_guidance_into_its_hops(
        linear_schedule: NoiseSchedule) -> None:
    network = ClassAffineEps(linear_schedule, [(0.2, 0.3), (0.8, 0.3), (0.4, 0.5)])
    guided = class_conditioned(unet_eps(network), y=0, cfg_scale=3.0, null_label=2)
    healthy = class_conditioned(unet_eps(network), y=0)
    config = TrainConfig(steps=300, batch_size=64, lr=0.02, warmup_steps=0, ema_decay=None,
                         grad_clip=None)
    student, history = distil(network, ArrayDataset(gaussian_images(512, 1)), linear_schedule,
                              level=LEVEL, teacher_steps=4, steps=1, config=config,
                              teacher=guided, as_eps=lambda m: class_conditioned(unet_eps(m),
                                                                                 y=0),
                              progress=False)
    assert [stage["steps"] for stage in history.stages] == [2, 1]
    x0 = gaussian_images(256, 2)
    x_l = linear_schedule.q_sample(x0, LEVEL, torch.randn(
        x0.shape, generator=torch.Generator().manual_seed(3)))
    with torch.no_grad():
        four = decode(guided, x_l, linear_schedule, LEVEL, 4, "ddim").x
        plain = decode(healthy, x_l, linear_schedule, LEVEL, 1, "ddim").x
        distilled = decode(class_conditioned(unet_eps(student), y=0), x_l, linear_schedule,
                           LEVEL, 1, "ddim")
    assert distilled.nfe == 1 and guided.nfe_per_call == 2
    plain_error = (plain - four).abs().mean()
    assert plain_error > 0.05  # the healthy model alone, in one hop, is far from the guided
    assert (distilled.x - four).abs().mean() < 0.05 * plain_error
    assert torch.equal(network.classes[0].slope,
                       AffineEps(linear_schedule, 0.2, 0.3).slope)  # the teacher untouched
