"""The inference engine: network batches that do not change results, a tuner that keeps the
fastest, bfloat16 autocast that is on when asked, and settings refused by name."""

import logging
import time

import pytest
import torch
from torch import nn

from anodiff.diffusion import engine
from anodiff.diffusion.engine import (
    BatchTuner,
    InferenceEngine,
    configure,
    evaluate_network,
    inference,
    parse_network_batch,
    resolved_precision,
)
from anodiff.diffusion.guidance import unet_eps
from anodiff.errors import AnodiffError
from anodiff.nets.builders import build_unet


@pytest.fixture(autouse=True)
def default_settings():
    """Every test starts and ends with the process defaults (auto, tuned)."""
    before = engine.current_settings()
    engine._engines.clear()
    configure("auto", "whole")
    yield
    configure(before.precision, before.network_batch)
    engine._engines.clear()


@pytest.fixture(scope="module")
def unet() -> nn.Module:
    """A quick UNet with random weights everywhere (MONAI zeroes its output layer, whose
    predictions would then all be 0 and every comparison trivial)."""
    torch.manual_seed(0)
    net = build_unet("quick", 2, num_class_embeds=2).eval()
    with torch.no_grad():
        for parameter in net.parameters():
            parameter.normal_(0, 0.1)
    return net


def inputs(n: int = 16) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(n, 2, 16, 16, generator=generator)
    return x, torch.randint(0, 100, (n,), generator=generator), torch.arange(n) % 2


@torch.no_grad()
@pytest.mark.parametrize("size", [1, 3, 8, 16, 40])
def test_network_batches_give_the_whole_batch_result(unet, size: int) -> None:
    x, t, y = inputs()
    whole = unet(x, timesteps=t, class_labels=y)
    assert whole.abs().mean() > 1e-3
    split = InferenceEngine("float32", size)(unet, x, timesteps=t,
                                                                    class_labels=y)
    # per-image keyword tensors (timesteps, labels) travel with their rows
    torch.testing.assert_close(split, whole, rtol=1e-5, atol=1e-5)


class Sleeper(nn.Module):
    """A network whose cost per call grows with the square of its batch: small batches win."""

    def forward(self, x: torch.Tensor, **_) -> torch.Tensor:
        time.sleep(2e-4 * x.shape[0] ** 2)
        return x * 2


def test_the_tuner_times_every_candidate_on_real_calls_then_keeps_the_fastest(caplog) -> None:
    runner, net, x = InferenceEngine("float32", "auto"), Sleeper(), \
        torch.ones(32, 1, 2, 2)
    with caplog.at_level(logging.INFO, logger="anodiff.diffusion.engine"):
        for _ in range(2 * 4):  # candidates 4, 8, 16, 32, two timings each
            assert torch.equal(runner(net, x), x * 2)
    tuner = runner.tuners[net][(1, 2, 2)]
    assert tuner.best == 4 and set(tuner.timings) == {4, 8, 16, 32}
    assert "batches of 4" in caplog.text and "ms per image" in caplog.text
    assert runner(net, x[:3]).shape[0] == 3  # a short last batch runs whole


def test_a_tuner_picks_by_best_timing_and_settles_once() -> None:
    tuner = BatchTuner((8, 32))
    assert [tuner.next_size() for _ in range(1)] == [8]
    assert not tuner.record(8, 0.5) and tuner.next_size() == 32
    assert not tuner.record(32, 0.2) and not tuner.record(8, 0.1)
    assert tuner.record(32, 0.3) and tuner.best == 8  # 8's best 0.1 beats 32's best 0.2
    assert not tuner.record(8, 9.0) and tuner.best == 8


@torch.no_grad()
def test_bfloat16_autocast_is_close_to_float32_but_not_equal(unet) -> None:
    x, t, y = inputs()
    full = InferenceEngine("float32", 16)(unet, x, timesteps=t,
                                                               class_labels=y)
    half = InferenceEngine("bfloat16", 16)(unet, x, timesteps=t,
                                                                class_labels=y)
    assert half.dtype == torch.float32
    error = ((half - full).norm() / full.norm()).item()
    assert 1e-5 < error < 5e-2


@torch.no_grad()
def test_unet_eps_goes_through_the_active_engine_only_inside_inference(unet) -> None:
    x, t, y = inputs(4)
    eps = unet_eps(unet)
    plain = eps(x, t + 1, y)
    with inference(torch.device("cpu")) as active:
        assert active.network_batch == "whole"  # the default keeps the method's batch
    configure("bfloat16", 2)
    with inference(torch.device("cpu")) as active:
        assert active.precision == "bfloat16" and active.network_batch == 2
        inside = eps(x, t + 1, y)
    assert not torch.equal(inside, plain)
    assert torch.equal(eps(x, t + 1, y), plain)
    assert torch.equal(evaluate_network(unet, x, timesteps=t, class_labels=y),
                       unet(x, timesteps=t, class_labels=y))


def test_auto_precision_is_float32_off_amx_and_on_gpus(monkeypatch) -> None:
    monkeypatch.setattr(engine, "has_amx", lambda: False)
    assert resolved_precision(torch.device("cpu")) == "float32"
    monkeypatch.setattr(engine, "has_amx", lambda: True)
    assert resolved_precision(torch.device("cpu")) == "bfloat16"
    assert resolved_precision(torch.device("cuda")) == "float32"  # unmeasured on GPUs
    assert resolved_precision(torch.device("cpu"), "float32") == "float32"


def test_auto_keeps_float32_where_bfloat16_does_not_pay(monkeypatch, caplog) -> None:
    monkeypatch.setattr(engine, "has_amx", lambda: True)
    cpu = torch.device("cpu")
    assert resolved_precision(cpu, bfloat16_pays=False) == "float32"
    assert resolved_precision(cpu, "bfloat16", bfloat16_pays=False) == "bfloat16"  # asked for
    with caplog.at_level(logging.INFO, logger="anodiff.diffusion.engine"):
        with inference(cpu, bfloat16_pays=False) as active:
            assert active.precision == "float32"
        with inference(cpu) as active:
            assert active.precision == "bfloat16"
    assert "float32 (auto: bfloat16 was measured slower for this method's networks)" in \
        caplog.text
    assert "bfloat16 (auto: this CPU has AMX)" in caplog.text


@pytest.mark.parametrize("bad", ["0", "-4", "eight", "8.5", ""])
def test_bad_network_batches_are_refused_by_name(bad: str) -> None:
    with pytest.raises(AnodiffError, match="--network-batch"):
        parse_network_batch(bad)
    assert parse_network_batch("auto") == "auto" and parse_network_batch(" Whole") == "whole"
    assert parse_network_batch("16") == 16 and parse_network_batch(16) == 16


def test_a_bad_precision_is_refused_by_name() -> None:
    with pytest.raises(AnodiffError, match="--precision 'fp8': use one of auto, float32"):
        configure("fp8")


def test_a_refused_configure_changes_nothing() -> None:
    configure("float32", 8)
    with pytest.raises(AnodiffError, match="--network-batch"):
        configure("bfloat16", "0")
    assert engine.current_settings() == engine.EngineSettings("float32", 8)
