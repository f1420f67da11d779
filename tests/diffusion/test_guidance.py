"""Guidance wrappers: exact checks on a two-Gaussian mixture, and on tiny MONAI networks."""

import math

import pytest
import torch
from torch import nn

from anodiff.diffusion.guidance import (
    class_conditioned,
    classifier_guided,
    classifier_logits,
    concat_condition,
    unet_eps,
)
from anodiff.diffusion.samplers import decode
from anodiff.diffusion.schedule import NoiseSchedule
from anodiff.diffusion.training import ArrayDataset, TrainConfig, train_noise_aware_classifier
from anodiff.nets.builders import build_classifier, build_unet

MEANS = (-0.5, 0.5)


class MixtureOracle:
    """Exact eps and exact class posterior for x0 ~ 1/2 N(m0, s^2 I) + 1/2 N(m1, s^2 I)."""

    nfe_per_call = 1

    def __init__(self, schedule: NoiseSchedule, s: float = 0.15) -> None:
        self.schedule, self.s = schedule, s

    def logits(self, x: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
        a, sigma = self.schedule.alpha_sigma(level, x)
        var = a**2 * self.s**2 + sigma**2
        dims = tuple(range(1, x.dim()))
        return torch.stack([-((x - a * m) ** 2 / (2 * var)).sum(dims) for m in MEANS], dim=1)

    def __call__(self, x: torch.Tensor, level: torch.Tensor, y=None) -> torch.Tensor:
        a, sigma = self.schedule.alpha_sigma(level, x)
        var = a**2 * self.s**2 + sigma**2
        resp = torch.softmax(self.logits(x, level), dim=1)
        shape = (-1,) + (1,) * (x.dim() - 1)
        mean = sum(resp[:, k].reshape(shape) * a * m for k, m in enumerate(MEANS))
        return sigma * (x - mean) / var


def _share_of_class_one(x: torch.Tensor) -> float:
    return (x.flatten(1).mean(1) > 0).double().mean().item()


def test_exact_classifier_guidance_samples_the_target_class() -> None:
    """With the exact p(y | x_l) and s = 1, guided eps is the exact class-conditional eps."""
    sched = NoiseSchedule.create("linear", 1000)
    oracle = MixtureOracle(sched)
    x_t = torch.randn(400, 1, 4, 4, dtype=torch.float64,
                      generator=torch.Generator().manual_seed(0))
    free = decode(oracle, x_t, sched, 1000, 100, "ddim").x
    assert 0.35 < _share_of_class_one(free) < 0.65
    for target in (0, 1):
        guided = classifier_guided(oracle, oracle.logits, y=target, scale=1.0, schedule=sched)
        x0 = decode(guided, x_t, sched, 1000, 100, "ddim").x
        share = _share_of_class_one(x0)
        assert share == (1.0 if target == 1 else 0.0)
        sample_mean = x0.flatten(1).mean(1).mean().item()
        assert sample_mean == pytest.approx(MEANS[target], abs=0.02)


def test_trained_noise_aware_classifier_guides_samples() -> None:
    sched = NoiseSchedule.create("linear", 1000)
    oracle = MixtureOracle(sched)
    gen = torch.Generator().manual_seed(1)
    labels = torch.randint(0, 2, (512,), generator=gen)
    images = (torch.tensor(MEANS)[labels].view(-1, 1, 1, 1)
              + 0.15 * torch.randn(512, 1, 8, 8, generator=gen))
    classifier = build_classifier("quick", 1, 2, (8, 8))
    config = TrainConfig(steps=150, batch_size=32, lr=2e-3, warmup_steps=10, ema_decay=None)
    classifier, history = train_noise_aware_classifier(
        classifier, ArrayDataset(images, labels), sched, config, max_level=600, progress=False)
    logits_fn = classifier_logits(classifier)
    test_labels = torch.randint(0, 2, (400,), generator=gen)
    test = (torch.tensor(MEANS)[test_labels].view(-1, 1, 1, 1)
            + 0.15 * torch.randn(400, 1, 8, 8, generator=gen))
    level = torch.full((400,), 300)
    noisy = sched.q_sample(test, level, torch.randn(test.shape, generator=gen))
    with torch.no_grad():
        accuracy = (logits_fn(noisy, level).argmax(1) == test_labels).float().mean().item()
    assert accuracy > 0.9  # chance is 0.5; the exact Bayes classifier scores ~0.99 here
    x_t = torch.randn(200, 1, 8, 8, generator=gen)
    guided = classifier_guided(oracle, logits_fn, y=1, scale=3.0, schedule=sched)
    with torch.no_grad():
        free = decode(oracle, x_t, sched, 600, 30, "ddim").x
        x0 = decode(guided, x_t, sched, 600, 30, "ddim").x
    assert _share_of_class_one(x0) > _share_of_class_one(free) + 0.3
    assert _share_of_class_one(x0) > 0.9


def _tiny_class_unet() -> nn.Module:
    net = build_unet("quick", 1, num_class_embeds=3)
    with torch.no_grad():  # MONAI zero-initialises output layers: give every weight a value
        for param in net.parameters():
            if not param.any():
                param.normal_(0, 0.1)
    return net.eval()


def test_classifier_free_guidance_scale_zero_is_unconditional_and_one_conditional() -> None:
    net = _tiny_class_unet()
    eps = unet_eps(net)
    x, level = torch.randn(3, 1, 16, 16), torch.tensor([5, 300, 900])
    with torch.no_grad():
        uncond = eps(x, level, torch.full((3,), 2))
        cond = eps(x, level, torch.full((3,), 1))
        assert not torch.allclose(uncond, cond)
        zero = class_conditioned(eps, y=1, cfg_scale=0.0, null_label=2)
        one = class_conditioned(eps, y=1, cfg_scale=1.0, null_label=2)
        three = class_conditioned(eps, y=1, cfg_scale=3.0, null_label=2)
        assert torch.allclose(zero(x, level), uncond, atol=1e-5)
        assert torch.allclose(one(x, level), cond, atol=1e-5)
        assert torch.allclose(three(x, level), uncond + 3 * (cond - uncond), atol=1e-5)
        assert torch.allclose(class_conditioned(eps, y=1)(x, level), cond, atol=1e-5)
    assert zero.nfe_per_call == 2 and class_conditioned(eps, y=1).nfe_per_call == 1


class RecordingNet(nn.Module):
    """Returns the first channels of its input and remembers what it was called with."""

    def __init__(self, out_channels: int) -> None:
        super().__init__()
        self.out_channels, self.seen = out_channels, []

    def forward(self, x, timesteps, class_labels=None):
        self.seen.append((x.clone(), timesteps.clone(), class_labels))
        return x[:, : self.out_channels] * 0.5


def test_concat_condition_feeds_the_condition_as_channels_also_under_cfg() -> None:
    net = RecordingNet(out_channels=1)
    cond = torch.rand(2, 3, 4, 4)
    eps = class_conditioned(concat_condition(unet_eps(net), cond), y=0, cfg_scale=2.0,
                            null_label=1)
    x = torch.randn(2, 1, 4, 4)
    out = eps(x, torch.tensor([10, 20]))
    seen, timesteps, labels = net.seen[-1]
    assert seen.shape == (4, 4, 4, 4)  # batch doubled by CFG, 1 + 3 channels
    assert torch.equal(seen[:2, 1:], cond) and torch.equal(seen[2:, 1:], cond)
    assert timesteps.tolist() == [9, 19, 9, 19]  # level l is network timestep l - 1
    assert labels.tolist() == [0, 0, 1, 1]
    assert torch.allclose(out, 0.5 * x)


def test_x0_predicting_networks_are_converted_to_eps() -> None:
    sched = NoiseSchedule.create("linear", 1000)
    x0, noise = torch.rand(2, 1, 4, 4), torch.randn(2, 1, 4, 4)
    level = torch.tensor([100, 700])
    x_t = sched.q_sample(x0, level, noise)

    class Perfect(nn.Module):
        def forward(self, x, timesteps, class_labels=None):
            return x0

    got = unet_eps(Perfect(), prediction="x0", schedule=sched)(x_t, level)
    assert torch.allclose(got, noise, atol=1e-4)


def test_guidance_scale_multiplies_the_noise_level() -> None:
    """eps_hat - eps = -s sqrt(1 - abar) grad log C: check the factor on a linear classifier."""
    sched = NoiseSchedule.create("linear", 1000)
    w = torch.randn(1, 2, 2)

    def logits(x, level):  # log softmax([0, <w, x>]) has a closed-form gradient
        return torch.stack([torch.zeros(x.shape[0]), (x * w).sum((1, 2, 3))], 1)

    def zero_eps(x, level, y=None):
        return torch.zeros_like(x)

    zero_eps.nfe_per_call = 1
    x, level = torch.randn(2, 1, 2, 2), torch.tensor([10, 900])
    got = classifier_guided(zero_eps, logits, y=1, scale=2.5, schedule=sched)(x, level)
    p1 = torch.sigmoid((x * w).sum((1, 2, 3))).view(-1, 1, 1, 1)
    sigma = (1 - sched.abar[level]).sqrt().view(-1, 1, 1, 1).float()
    assert torch.allclose(got, -2.5 * sigma * (1 - p1) * w, atol=1e-6)
    assert math.isclose(float(sigma[1]), float((1 - sched.abar[900]).sqrt()), rel_tol=1e-6)
