"""Samplers against exact references: the Gaussian oracle's closed-form ODE, MONAI, Bayes."""

import numpy as np
import pytest
import torch
from conftest import GaussianOracle
from monai.networks.schedulers import DDIMScheduler

from anodiff.diffusion.samplers import (
    decode,
    encode,
    level_sequence,
    sample,
    transport,
)
from anodiff.diffusion.schedule import NoiseSchedule
from anodiff.diffusion.solvers import ddpm_step
from anodiff.errors import AnodiffError

STEPS = (20, 40, 80, 160)


def _noise(n: int = 2000, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


def _decode_errors(oracle: GaussianOracle, solver: str, to_level: int) -> np.ndarray:
    x_t = _noise()
    exact = oracle.exact_transport(x_t, 1000, to_level)
    return np.array([
        (decode(oracle, x_t, oracle.schedule, 1000, n, solver, to_level=to_level).x - exact)
        .abs().max().item()
        for n in STEPS
    ])


def test_ddim_converges_to_the_exact_ode_solution_at_first_order(oracle: GaussianOracle) -> None:
    for to_level in (0, 10):
        errors = _decode_errors(oracle, "ddim", to_level)
        ratios = errors[:-1] / errors[1:]
        assert errors[-1] < 0.035
        assert np.all((ratios > 1.7) & (ratios < 2.3)), ratios  # halving h halves the error


def test_dpmpp2m_converges_at_second_order(oracle: GaussianOracle) -> None:
    errors = _decode_errors(oracle, "dpmpp2m", to_level=10)
    ratios = errors[:-1] / errors[1:]
    assert np.all(ratios[1:] > 3.3), ratios  # halving h quarters the error (asymptotically)
    assert errors[-1] < _decode_errors(oracle, "ddim", to_level=10)[-1] / 5


def test_dpmpp2m_decodes_to_clean_data(oracle: GaussianOracle) -> None:
    errors = _decode_errors(oracle, "dpmpp2m", to_level=0)
    assert errors[-1] < 0.005 and errors[-1] < errors[0] / 20


@pytest.mark.parametrize("solver", ["ddim", "dpmpp2m"])
def test_encoding_follows_the_ode_and_round_trips(oracle: GaussianOracle, solver: str) -> None:
    sched = oracle.schedule
    x0 = 0.3 + 0.5 * _noise(seed=1)
    encode_err, round_trip = [], []
    for n in STEPS:
        x_l = encode(oracle, x0, sched, 500, n, solver)
        encode_err.append((x_l.x - oracle.exact_transport(x0, 0, 500)).abs().max().item())
        back = decode(oracle, x_l.x, sched, 500, n, solver)
        round_trip.append((back.x - x0).abs().mean().item())
        assert x_l.nfe == back.nfe == n
    assert all(np.diff(encode_err) < 0) and all(np.diff(round_trip) < 0)
    assert round_trip[-1] < {"ddim": 0.01, "dpmpp2m": 0.001}[solver]
    assert round_trip[-1] < round_trip[0] / 6


def test_partial_trajectory_between_intermediate_levels(oracle: GaussianOracle) -> None:
    x = oracle.exact_transport(_noise(), 1000, 700)
    out = transport(oracle, x, oracle.schedule, level_sequence(700, 200, 200), "dpmpp2m")
    assert out.levels[0] == 700 and out.levels[-1] == 200
    assert (out.x - oracle.exact_transport(x, 700, 200)).abs().max() < 1e-3


def test_sampling_from_noise_reproduces_the_data_distribution(oracle: GaussianOracle) -> None:
    out = sample(oracle, (20000,), oracle.schedule, 100, "dpmpp2m",
                 generator=torch.Generator().manual_seed(3))
    assert out.x.mean().item() == pytest.approx(0.3, abs=0.01)
    assert out.x.std().item() == pytest.approx(0.5, abs=0.01)


def test_ancestral_ddpm_sampling_reproduces_the_data_distribution(
    linear_schedule: NoiseSchedule,
) -> None:
    oracle = GaussianOracle(linear_schedule, mu=-0.2, s=0.4)
    x_t = torch.randn(20000, dtype=torch.float64)
    out = decode(oracle, x_t, linear_schedule, 1000, 1000, "ddpm",
                 generator=torch.Generator().manual_seed(4))
    assert out.x.mean().item() == pytest.approx(-0.2, abs=0.01)
    assert out.x.std().item() == pytest.approx(0.4, abs=0.01)
    assert out.nfe == 1000


@pytest.mark.parametrize("level", [2, 300, 1000])
def test_ddpm_step_with_eta_one_is_the_posterior(linear_schedule: NoiseSchedule, level: int
                                                 ) -> None:
    """Eq. 5 with eta = 1 on consecutive levels samples q(x_{l-1} | x_l, x0_hat) (Ho 2020)."""
    abar = linear_schedule.abar
    x, eps = torch.randn(5, dtype=torch.float64), torch.randn(5, dtype=torch.float64)
    x0_hat = linear_schedule.predict_x0(x, level, eps)
    mean, var = linear_schedule.posterior(x0_hat, x, level)
    zero, one = torch.zeros(5, dtype=torch.float64), torch.ones(5, dtype=torch.float64)
    assert torch.allclose(ddpm_step(x0_hat, eps, abar[level], abar[level - 1], 1.0, zero), mean)
    stepped = ddpm_step(x0_hat, eps, abar[level], abar[level - 1], 1.0, one)
    assert torch.allclose(stepped - mean, torch.full_like(mean, var**0.5))


@pytest.mark.parametrize("inference_steps", [50, 1000])
def test_ddim_step_and_encoding_step_agree_with_monai(inference_steps: int) -> None:
    monai = DDIMScheduler(num_train_timesteps=1000, schedule="linear_beta", clip_sample=False)
    monai.set_timesteps(inference_steps)
    ours = NoiseSchedule.create("linear", 1000)
    jump = 1000 // inference_steps
    x = torch.randn(2, 1, 8, 8)
    eps = torch.randn(2, 1, 8, 8)

    class FixedEps:
        nfe_per_call = 1

        def __call__(self, x_t: torch.Tensor, level: torch.Tensor, y=None) -> torch.Tensor:
            return eps

    for timestep in (999, 500, jump - 1, 0):
        ref, _ = monai.step(eps, timestep, x)
        got = transport(FixedEps(), x, ours, [timestep + 1, max(timestep + 1 - jump, 0)], "ddim")
        assert torch.allclose(got.x, ref, atol=1e-5), timestep
    for timestep in (0, 400, 999 - jump):
        ref, _ = monai.reversed_step(eps, timestep, x)
        got = transport(FixedEps(), x, ours, [timestep + 1, timestep + 1 + jump], "ddim")
        assert torch.allclose(got.x, ref, atol=1e-5), timestep


def test_level_sequence_skips_steps_in_both_directions() -> None:
    assert level_sequence(500, 0, 5) == (500, 400, 300, 200, 100, 0)
    assert level_sequence(0, 250, 4) == (0, 62, 125, 188, 250)
    assert level_sequence(10, 7, 50) == (10, 9, 8, 7)  # never more hops than levels
    assert level_sequence(3, 3, 5) == (3,)
    with pytest.raises(AnodiffError):
        level_sequence(10, 0, 0)


def test_nfe_counts_one_evaluation_per_hop_and_multiplies_with_guidance(
    oracle: GaussianOracle,
) -> None:
    x = _noise(10)
    out = decode(oracle, x, oracle.schedule, 400, 25, "dpmpp2m")
    assert out.nfe == oracle.calls == 25  # the multistep solver reuses its previous output
    oracle.nfe_per_call = 2  # e.g. classifier-free guidance: two network passes per call
    assert decode(oracle, x, oracle.schedule, 400, 25, "ddim").nfe == 50


def test_invalid_sampler_requests_raise_clear_errors(oracle: GaussianOracle) -> None:
    x = _noise(4)
    with pytest.raises(AnodiffError, match="unknown solver"):
        decode(oracle, x, oracle.schedule, 100, 10, "euler")
    with pytest.raises(AnodiffError, match="deterministic"):
        encode(oracle, x, oracle.schedule, 100, 10, "ddpm")
    with pytest.raises(AnodiffError, match=r"\[0, 1000\]"):
        decode(oracle, x, oracle.schedule, 1200, 10)
    with pytest.raises(AnodiffError, match="below"):
        decode(oracle, x, oracle.schedule, 100, 10, to_level=200)


def test_simplex_noise_drives_the_ancestral_sampler(linear_schedule: NoiseSchedule) -> None:
    oracle = GaussianOracle(linear_schedule, mu=0.0, s=1.0)
    x = torch.randn(2, 1, 32, 32, dtype=torch.float64)
    args = dict(noise="simplex", noise_options={"frequency": 8.0})
    first = decode(oracle, x, linear_schedule, 50, 50, "ddpm",
                   generator=torch.Generator().manual_seed(5), **args)
    again = decode(oracle, x, linear_schedule, 50, 50, "ddpm",
                   generator=torch.Generator().manual_seed(5), **args)
    gaussian = decode(oracle, x, linear_schedule, 50, 50, "ddpm",
                      generator=torch.Generator().manual_seed(5))
    assert torch.equal(first.x, again.x)  # reproducible from the seed
    assert not torch.allclose(first.x, gaussian.x)
    # simplex noise is spatially smooth: neighbouring pixels of the injected noise correlate
    injected = first.x - decode(oracle, x, linear_schedule, 50, 50, "ddim").x
    a, b = injected[..., :, :-1].flatten(), injected[..., :, 1:].flatten()
    assert torch.corrcoef(torch.stack([a, b]))[0, 1] > 0.5
