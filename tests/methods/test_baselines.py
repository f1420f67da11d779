"""The two baselines on a toy brain-like problem: they find a lesion, save and load."""

from pathlib import Path

import numpy as np
import pytest
import torch

import anodiff
from anodiff.evaluation.metrics import auroc


def toy_slices(n: int, lesion: bool, seed: int, size: int = 32) -> tuple[torch.Tensor, np.ndarray]:
    """Discs of 'tissue' (two intensities) on a zero background; optional bright lesion."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    images = np.zeros((n, 2, size, size), np.float32)
    truth = np.zeros((n, size, size), bool)
    for i in range(n):
        r = np.hypot(yy - size / 2, xx - size / 2)
        brain = r < size * 0.42
        inner = r < size * 0.25 + rng.normal(0, 1)
        images[i, :, brain] = 0.5 + 0.03 * rng.normal(size=(brain.sum(), 2))
        images[i, :, inner] = 0.35 + 0.03 * rng.normal(size=(inner.sum(), 2))
        if lesion:
            cy, cx = rng.integers(size // 3, 2 * size // 3, 2)
            truth[i] = np.hypot(yy - cy, xx - cx) < 3
            images[i, 1, truth[i]] = 0.9  # bright in the second channel only
    return torch.from_numpy(images.clip(0, 1)), truth


@pytest.mark.parametrize("mode", ["rarity", "bright"])
def test_threshold_baseline_finds_a_bright_lesion(mode: str, tmp_path: Path) -> None:
    healthy, _ = toy_slices(40, False, seed=0)
    test, truth = toy_slices(10, True, seed=1)
    det = anodiff.create("threshold", mode=mode, channel=None if mode == "rarity" else 1)
    det.fit(healthy)
    res = det.localize(test)
    assert auroc(truth, res.anomaly_map.numpy()) > 0.95
    assert res.mask is not None and res.mask[torch.from_numpy(truth)].float().mean() > 0.5
    healthy_res = det.localize(toy_slices(10, False, seed=2)[0])
    assert healthy_res.mask.float().mean() < 0.05  # calibrated to ~1 % false positives
    assert res.score.mean() > healthy_res.score.mean()
    det.save(tmp_path / "model")
    again = anodiff.load(tmp_path / "model")
    assert torch.equal(again.localize(test).anomaly_map, res.anomaly_map)


def test_autoencoder_baseline_trains_reconstructs_and_round_trips(tmp_path: Path) -> None:
    healthy, _ = toy_slices(64, False, seed=0)
    test, truth = toy_slices(8, True, seed=1)
    det = anodiff.create("autoencoder", preset="quick")
    det.run_dir = tmp_path / "run"
    det.fit(healthy)
    assert (tmp_path / "run" / "checkpoints" / "latest").is_file()
    res = det.localize(test)
    assert res.pseudo_healthy.shape == test.shape and res.nfe == 1
    assert res.anomaly_map.shape == (8, 32, 32)
    assert auroc(truth, res.anomaly_map.numpy()) > 0.8  # the bright disc is not restored
    healthy_res = det.localize(toy_slices(8, False, seed=2)[0])
    assert healthy_res.mask.float().mean() < 0.05  # calibrated to ~1 % false positives
    det.save(tmp_path / "model")
    again = anodiff.load(tmp_path / "model")
    assert torch.allclose(again.localize(test).anomaly_map, res.anomaly_map)
