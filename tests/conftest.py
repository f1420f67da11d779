"""Shared fixtures: deterministic torch, and analytic noise predictors.

``GaussianOracle`` is the exact optimal noise predictor for data x0 ~ N(mu, s^2 I): with
x_l = a x0 + sigma eps, E[eps | x_l] = sigma (x_l - a mu) / (a^2 s^2 + sigma^2). Its
probability-flow ODE is solved in closed form by :meth:`GaussianOracle.exact_transport`
(each coordinate keeps its standardised value z = (x - a mu) / sqrt(a^2 s^2 + sigma^2)),
which gives the samplers an exact reference instead of a self-consistency check.
"""

from __future__ import annotations

import os

import pytest
import torch

from anodiff.diffusion.engine import configure
from anodiff.diffusion.schedule import NoiseSchedule

# pytest-xdist runs the tests in several processes (pyproject's addopts): each gets one
# torch thread, so the processes together do not oversubscribe the 2-core machine.
THREADS = 1 if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1 else 2


@pytest.fixture(autouse=True, scope="session")
def _float32_networks() -> None:
    """Networks in float32 on every machine, so figures do not depend on whether the CPU
    has AMX (where the engine's ``auto`` takes bfloat16; tests/diffusion/test_engine.py)."""
    configure(precision="float32")


@pytest.fixture(autouse=True)
def _deterministic() -> None:
    torch.manual_seed(0)
    torch.set_num_threads(THREADS)


class GaussianOracle:
    """The optimal eps-predictor for x0 ~ N(mu, s^2 I) under ``schedule`` (float64)."""

    nfe_per_call = 1

    def __init__(self, schedule: NoiseSchedule, mu: float, s: float) -> None:
        self.schedule, self.mu, self.s = schedule, mu, s
        self.calls = 0

    def __call__(self, x: torch.Tensor, level: torch.Tensor, y=None) -> torch.Tensor:
        self.calls += 1
        a, sigma = self.schedule.alpha_sigma(level, x)
        return sigma * (x - a * self.mu) / (a**2 * self.s**2 + sigma**2)

    def exact_transport(self, x: torch.Tensor, start: int, end: int) -> torch.Tensor:
        """The probability-flow ODE solution from level ``start`` to level ``end``."""
        a0, s0 = self.schedule.alpha_sigma(start, x)
        a1, s1 = self.schedule.alpha_sigma(end, x)
        z = (x - a0 * self.mu) / (a0**2 * self.s**2 + s0**2).sqrt()
        return a1 * self.mu + (a1**2 * self.s**2 + s1**2).sqrt() * z


@pytest.fixture
def linear_schedule() -> NoiseSchedule:
    return NoiseSchedule.create("linear", 1000)


@pytest.fixture
def oracle(linear_schedule: NoiseSchedule) -> GaussianOracle:
    return GaussianOracle(linear_schedule, mu=0.3, s=0.5)
