import math

import pytest
import torch
from monai.networks.schedulers import DDPMScheduler

from anodiff.diffusion.schedule import NoiseSchedule
from anodiff.errors import AnodiffError


def test_linear_schedule_matches_ho_and_monai() -> None:
    sched = NoiseSchedule.create("linear", 1000)
    assert torch.allclose(sched.betas, torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64))
    monai = DDPMScheduler(num_train_timesteps=1000, schedule="linear_beta")
    assert sched.abar[0] == 1.0
    assert torch.allclose(sched.abar[1:].float(), monai.alphas_cumprod, atol=1e-6)


@pytest.mark.parametrize("kind", ["linear", "cosine"])
@pytest.mark.parametrize("steps", [10, 250, 1000])
def test_schedules_decrease_to_pure_noise(kind: str, steps: int) -> None:
    abar = NoiseSchedule.create(kind, steps).abar
    assert abar.shape == (steps + 1,)
    assert torch.all(abar[1:] < abar[:-1])
    assert abar[-1] < 1e-3


def test_cosine_follows_its_closed_form() -> None:
    abar = NoiseSchedule.create("cosine", 1000).abar
    t = torch.arange(1001, dtype=torch.float64) / 1000
    f = torch.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2
    # equal wherever beta was not clipped at 0.999 (all but the very last levels)
    assert torch.allclose(abar[:990], (f / f[0])[:990], rtol=1e-9)


def test_q_sample_has_the_marginal_of_eq2() -> None:
    sched = NoiseSchedule.create("linear", 1000)
    x0 = torch.full((20000,), 0.7, dtype=torch.float64)
    x = sched.q_sample(x0, 300, torch.randn_like(x0))
    a = sched.abar[300]
    assert x.mean().item() == pytest.approx(float(a.sqrt() * 0.7), abs=0.02)
    assert x.var().item() == pytest.approx(float(1 - a), rel=0.05)


def test_predict_x0_and_eps_invert_q_sample() -> None:
    sched = NoiseSchedule.create("cosine", 200)
    x0 = torch.rand(4, 1, 8, 8, dtype=torch.float64)
    eps = torch.randn(4, 1, 8, 8, dtype=torch.float64)
    level = torch.tensor([1, 50, 120, 200])
    x = sched.q_sample(x0, level, eps)
    assert torch.allclose(sched.predict_x0(x, level, eps), x0)
    assert torch.allclose(sched.predict_eps(x, level, x0), eps)


def test_posterior_of_the_first_step_is_the_clean_image() -> None:
    sched = NoiseSchedule.create("linear", 1000)
    x0 = torch.tensor([0.2, -1.0], dtype=torch.float64)
    x = torch.tensor([0.5, 0.1], dtype=torch.float64)
    mean, var = sched.posterior(x0, x, 1)
    assert torch.allclose(mean, x0) and var == 0.0


@pytest.mark.parametrize("level", [2, 500, 1000])
def test_posterior_equals_bayes_rule(level: int) -> None:
    """q(x_{l-1} | x_l, x0) computed independently from the two Gaussians it combines."""
    sched = NoiseSchedule.create("linear", 1000)
    x0 = torch.tensor([0.2, -1.0], dtype=torch.float64)
    x = torch.tensor([0.5, 0.1], dtype=torch.float64)
    beta = sched.betas[level - 1]
    prior_mean, prior_var = sched.abar[level - 1].sqrt() * x0, 1 - sched.abar[level - 1]
    precision = 1 / prior_var + (1 - beta) / beta
    mean = (prior_mean / prior_var + (1 - beta).sqrt() * x / beta) / precision
    got_mean, got_var = sched.posterior(x0, x, level)
    assert torch.allclose(got_mean, mean)
    assert got_var == pytest.approx(float(1 / precision), rel=1e-9)


def test_bad_arguments_raise_clear_errors() -> None:
    with pytest.raises(AnodiffError, match="unknown kind"):
        NoiseSchedule.create("quadratic", 100)
    sched = NoiseSchedule.create("linear", 100)
    with pytest.raises(AnodiffError, match=r"\[0, 100\]"):
        sched.check_level(101)
