"""Several draws of a method combined into one map (anodiff.scoring.aggregation) and the
shared pipeline that makes the draws (``samples``, ``levels``, ``aggregate``)."""

from dataclasses import dataclass

import numpy as np
import pytest
import torch

from anodiff.errors import AnodiffError
from anodiff.methods.base import Detector, LocalizationConfig
from anodiff.methods.results import RawResult
from anodiff.scoring.aggregation import VARIANCE_FLOOR, aggregate_maps, zscore_map


def test_zscore_matches_a_direct_numpy_computation() -> None:
    rng = np.random.default_rng(0)
    x = rng.random((2, 3, 5, 4)).astype(np.float32)
    recons = rng.random((6, 2, 3, 5, 4)).astype(np.float32)
    fg = rng.random((2, 5, 4)) > 0.3
    expected = np.zeros((2, 5, 4))
    for i in range(2):
        mean, var = recons[:, i].mean(0), recons[:, i].var(0, ddof=1)
        floor = np.median(var[:, fg[i]], axis=1)[:, None, None]
        expected[i] = ((x[i] - mean) ** 2 / (var + floor + VARIANCE_FLOOR)).mean(0)
    got = zscore_map(torch.from_numpy(x), torch.from_numpy(recons), torch.from_numpy(fg))
    assert np.allclose(got.numpy(), expected, rtol=1e-4)


def test_identical_reconstructions_give_a_finite_scaled_residual() -> None:
    x = torch.rand(1, 1, 4, 4)
    recons = torch.zeros(3, 1, 1, 4, 4)
    got = zscore_map(x, recons, torch.ones(1, 4, 4, dtype=torch.bool))
    assert torch.isfinite(got).all()
    assert torch.allclose(got, x[:, 0] ** 2 / VARIANCE_FLOOR)


def test_zscore_finds_a_small_change_where_reconstructions_agree() -> None:
    """A toy a residual map gets wrong: on the left the reconstructions disagree by +-0.3
    (an edge the model is unsure of) and the input differs from their mean by 0.2; on the
    right they agree to 0.01 and a lesion changes the input by 0.1. The mean residual ranks
    the edge first, the z-score ranks the lesion first."""
    gen = torch.Generator().manual_seed(0)
    k, size = 8, 16
    spread = torch.full((1, 1, size, size), 0.01)
    spread[..., : size // 2] = 0.3
    recons = 0.5 + spread * torch.randn(k, 1, 1, size, size, generator=gen)
    x = recons.mean(0).clone()
    x[..., 4, 2] += 0.2          # the uncertain region: a larger residual, but normal
    x[..., 4, size - 3] += 0.1   # the confident region: a small residual, the lesion
    residual = ((x - recons) ** 2).sum(2).mean(0)[0]  # mean of the draws' squared errors
    assert residual[4, 2] > residual[4, size - 3]
    z = aggregate_maps(x, ((x - recons) ** 2).sum(2), recons, "zscore",
                       torch.ones(1, size, size, dtype=torch.bool))[0]
    assert z[4, size - 3] > z[4, 2]
    assert z[4, size - 3] == z.max()


@dataclass(frozen=True)
class NoisyConfig(LocalizationConfig):
    level: int = 10


class NoisyReconstructor(Detector[NoisyConfig]):
    """Reconstructs a constant 0.5 plus noise of s.d. level / 100 (a test double)."""

    supervision = "unsupervised"
    description = "noisy constant reconstruction (test double)"
    presets = {"quick": NoisyConfig()}
    level_setting = "level"
    reconstructs = True

    def fit_parts(self, data):
        self.prepare(tuple(torch.as_tensor(data).shape[1:]))

    def step(self, x, generator):
        noise = torch.randn(x.shape, generator=generator).to(x.device)
        recon = 0.5 + self.config.level / 100 * noise
        return RawResult(anomaly_map=((x - recon) ** 2).sum(1), nfe=3, pseudo_healthy=recon)


def _fitted(**settings) -> NoisyReconstructor:
    det = NoisyReconstructor(NoisyConfig(**settings))
    det.fit(torch.full((4, 1, 6, 6), 0.5))
    return det


def test_samples_and_levels_make_the_draws_and_combine_them() -> None:
    x = torch.rand(5, 1, 6, 6, generator=torch.Generator().manual_seed(1))
    one = _fitted().localize(x)
    assert one.nfe == 3 and one.uncertainty is None
    four = _fitted(samples=4).localize(x)
    assert four.nfe == 12 and four.uncertainty is not None
    # The draws continue one seeded stream: the mean of four draws of the same images.
    gen = torch.Generator().manual_seed(0)
    draws = torch.stack([((x - (0.5 + 0.1 * torch.randn(x.shape, generator=gen))) ** 2)
                         .sum(1) for _ in range(4)])
    raw = _fitted(samples=4).run(x)  # before the shared foreground and smoothing
    assert torch.allclose(raw.anomaly_map, draws.mean(0), atol=1e-6)
    assert torch.allclose(raw.uncertainty, draws.std(0, correction=0), atol=1e-6)
    levels = _fitted(levels=(5, 40), samples=2).localize(x)
    assert levels.nfe == 12
    assert levels.uncertainty is not None and levels.uncertainty.mean() > four.uncertainty.mean()
    z = _fitted(samples=6, aggregate="zscore").localize(x)
    assert torch.isfinite(z.anomaly_map).all() and z.anomaly_map.shape == (5, 6, 6)


def test_aggregation_settings_are_refused_where_they_cannot_work() -> None:
    with pytest.raises(AnodiffError, match="samples >= 2 or two or more levels"):
        NoisyConfig(aggregate="zscore")
    with pytest.raises(AnodiffError, match="levels must be distinct"):
        NoisyConfig(levels=(5, 5))
    with pytest.raises(AnodiffError, match="samples must be >= 1"):
        NoisyConfig(samples=0)
    from anodiff.methods.invdetect import InvDetect, InvDetectConfig
    from anodiff.methods.threshold import ThresholdConfig, ThresholdDetector

    with pytest.raises(AnodiffError, match="samples and levels must stay"):
        InvDetect(InvDetectConfig(samples=2))
    with pytest.raises(AnodiffError, match="no test-time noise level"):
        ThresholdDetector(ThresholdConfig(levels=(10,)))
    with pytest.raises(AnodiffError, match="needs pseudo-healthy"):
        ThresholdDetector(ThresholdConfig(samples=2, aggregate="zscore"))
    from anodiff.methods.anoddpm import AnoDDPMConfig

    with pytest.raises(AnodiffError, match="level must be in"):
        AnoDDPMConfig(levels=(100, 900))
