"""The shared pipeline on a test double: validation, batching, mask and score rules,
calibration, retuning, saving (format 2), reading format-1 checkpoints, the registry."""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

import anodiff
from anodiff.cli import app
from anodiff.diffusion.checkpoint import write_checkpoint
from anodiff.methods import registry
from anodiff.methods.base import Detector, LocalizationConfig
from anodiff.methods.results import AnomalyResult, RawResult
from anodiff.methods.training_data import calibration_images
from anodiff.scoring.thresholds import healthy_fpr_threshold


@dataclass(frozen=True)
class MeanConfig(LocalizationConfig):
    gain: float = 1.0


class MeanDetector(Detector[MeanConfig]):
    """|x - training mean| summed over channels, through a 1x1 convolution (one 'NFE')."""

    supervision = "unsupervised"
    description = "distance to the training mean (test double)"
    presets = {"quick": MeanConfig(), "cpu": MeanConfig(gain=2.0)}
    counted = ("net",)

    def build(self, input_shape):
        super().build(input_shape)
        self.net = nn.Conv2d(input_shape[0], input_shape[0], 1)
        self.register_buffer("mean", torch.zeros(0))

    def fit_parts(self, data):
        images = torch.as_tensor(data)
        self.prepare(tuple(images.shape[1:]))
        with torch.no_grad():
            self.net.weight.copy_(torch.eye(images.shape[1])[:, :, None, None])
            self.net.bias.zero_()
        self.mean = images.mean(0).to(self.device)

    def step(self, x, generator):
        return RawResult(anomaly_map=self.config.gain * (self.net(x) - self.mean).abs().sum(1),
                         nfe=1, pseudo_healthy=self.mean.expand_as(x))


@pytest.fixture
def mean_method():
    cls = registry.register("test-mean")(MeanDetector)
    yield cls
    registry.unregister("test-mean")


def _fitted(**settings) -> MeanDetector:
    det = MeanDetector(MeanConfig(**settings))
    det.fit(torch.rand(12, 2, 8, 8, generator=torch.Generator().manual_seed(0)) * 0.5)
    return det


def test_create_builds_a_registered_method_with_overrides(mean_method) -> None:
    det = anodiff.create("test-mean", preset="quick", gain=3.0)
    assert isinstance(det, mean_method) and det.config.gain == 3.0
    assert anodiff.create("test-mean").config.gain == 2.0  # cpu is the default preset
    assert "test-mean" in [m.name for m in anodiff.methods()]
    output = CliRunner().invoke(app, ["methods"]).output
    assert "test-mean" in output and "unsupervised" in output


def test_create_names_unknown_methods_presets_and_bad_settings(mean_method) -> None:
    with pytest.raises(anodiff.AnodiffError, match="unknown method 'nope'"):
        anodiff.create("nope")
    with pytest.raises(anodiff.AnodiffError, match="unknown preset 'paper'"):
        anodiff.create("test-mean", preset="paper")
    with pytest.raises(anodiff.AnodiffError, match=r"unknown setting\(s\) \['sigma'\]"):
        anodiff.create("test-mean", sigma=1)
    with pytest.raises(anodiff.AnodiffError, match="test-mean: fpr must be in"):
        anodiff.create("test-mean", fpr=1.5)
    with pytest.raises(anodiff.AnodiffError, match="mask rule of its own"):
        anodiff.create("test-mean", mask="own")


def test_anomaly_result_checks_its_shapes() -> None:
    amap = torch.zeros(2, 4, 4)
    AnomalyResult(anomaly_map=amap, score=torch.zeros(2), nfe=3, mask=amap > 0,
                  pseudo_healthy=torch.zeros(2, 3, 4, 4))
    with pytest.raises(ValueError, match="score"):
        AnomalyResult(anomaly_map=amap, score=torch.zeros(3), nfe=0)
    with pytest.raises(ValueError, match="mask must be a bool"):
        AnomalyResult(anomaly_map=amap, score=torch.zeros(2), nfe=0, mask=amap)
    with pytest.raises(ValueError, match="uncertainty"):
        AnomalyResult(anomaly_map=amap, score=torch.zeros(2), nfe=0,
                      uncertainty=torch.zeros(2, 4, 5))


def test_localize_runs_the_shared_tail() -> None:
    det = _fitted(score="top_k", score_top_k=3, batch_size=2)
    x = torch.rand(5, 2, 8, 8, generator=torch.Generator().manual_seed(1))
    x[:, :, 0, :] = 0  # a background row: the minimum of every image
    result = det.localize(x)
    raw = (x - det.mean).abs().sum(1)
    fg = (x > 0).any(1)
    assert torch.allclose(result.anomaly_map, torch.where(fg, raw, torch.zeros(())))
    top3 = torch.stack([raw[i][fg[i]].topk(3).values.mean() for i in range(5)])
    assert torch.allclose(result.score, top3)
    assert result.nfe == 1 and result.pseudo_healthy.shape == x.shape
    assert not result.mask[:, 0, :].any()  # masks stay in the foreground


def test_healthy_fpr_mask_is_calibrated_on_healthy_slices() -> None:
    det = _fitted(mask="healthy_fpr", fpr=0.05, calibration_images=64)
    healthy = torch.rand(12, 2, 8, 8, generator=torch.Generator().manual_seed(0)) * 0.5
    maps = det.localize(healthy).anomaly_map
    fg = (healthy > healthy.flatten(1).min(1).values[:, None, None, None]).any(1)
    assert float(det.threshold) == healthy_fpr_threshold(maps.numpy(), 0.05, fg.numpy())
    flagged = det.localize(healthy).mask[fg].float().mean()
    assert 0.04 <= float(flagged) <= 0.06
    otsu = det.retuned(mask="otsu").localize(healthy).mask
    assert not torch.equal(otsu, det.localize(healthy).mask)


@pytest.mark.parametrize(("images", "message"), [
    (torch.rand(2, 3, 8, 8), "takes 2 channel"),
    (torch.rand(2, 2, 9, 8), "takes 8 x 8 slices"),
    (torch.rand(3, 8, 8), "expected images .N, 2, 8, 8., one slice .2, 8, 8."),
    (torch.rand(8, 8), "got shape .8, 8.; a volume must be sliced"),
    (torch.zeros(0, 2, 8, 8), "no images"),
    (torch.full((1, 2, 8, 8), float("nan")), "NaN"),
    (torch.full((1, 2, 8, 8), 2.0), r"\[0, 1\]"),
    ("scan.nii.gz", "numeric array"),
])
def test_bad_input_is_one_named_error(images, message: str) -> None:
    with pytest.raises(anodiff.AnodiffError, match=message):
        _fitted().localize(images)


def test_untrained_detectors_refuse() -> None:
    with pytest.raises(anodiff.AnodiffError, match="call fit"):
        MeanDetector(MeanConfig()).localize(torch.zeros(1, 2, 8, 8))


def test_retuned_shares_parts_and_refuses_stale_calibration() -> None:
    det = _fitted(mask="healthy_fpr")
    other = det.retuned(score="mean", batch_size=3)
    assert other.net is det.net and torch.equal(other.threshold, det.threshold)
    with pytest.raises(anodiff.AnodiffError, match="stale"):
        det.retuned(gain=5.0)  # the threshold was calibrated on gain-1 maps
    with pytest.raises(anodiff.AnodiffError, match="unknown setting"):
        det.retuned(nope=1)
    plain = _fitted()
    with pytest.raises(anodiff.AnodiffError, match="needs a threshold"):
        plain.retuned(mask="healthy_fpr")


def test_every_mask_rule_gets_a_case_calibration() -> None:
    """The pixel threshold at fpr and the largest healthy case share, whatever the mask
    rule; a case with a bright region scores above it; retuning a setting the maps depend
    on drops the calibration instead of keeping a stale one."""
    det = _fitted(fpr=0.05)  # mask otsu
    assert not torch.isfinite(det.threshold)
    healthy = torch.rand(12, 2, 8, 8, generator=torch.Generator().manual_seed(0)) * 0.5
    out = det.localize(healthy)
    fg = (healthy > healthy.flatten(1).min(1).values[:, None, None, None]).any(1)
    assert float(det.flag_threshold) == healthy_fpr_threshold(out.anomaly_map.numpy(), 0.05,
                                                              fg.numpy())
    shares = [float(((m >= det.flag_threshold) & f).sum() / f.sum())
              for m, f in zip(out.anomaly_map, fg, strict=True)]
    assert float(det.case_threshold) == pytest.approx(max(shares))  # one image, one case
    sick = healthy.clone()
    sick[:, :, 2:6, 2:6] = 1.0
    score, threshold = det.case_score(det.localize(sick).anomaly_map, fg)
    assert score > threshold == float(det.case_threshold)
    assert det.retuned(score="mean").case_score(out.anomaly_map, fg) is not None
    assert det.retuned(gain=5.0).case_score(out.anomaly_map, fg) is None
    assert torch.isfinite(det.case_threshold)  # the original keeps its own


def test_calibration_takes_every_case_in_turn() -> None:
    """Slices come one per case in turn, seeded: each case gets about as many."""
    cases = np.repeat(["a", "b", "c"], [10, 4, 1])
    items = [{"image": torch.full((1, 4, 4), i / 20), "label": 0, "case": c}
             for i, c in enumerate(cases)]
    images, picked = calibration_images(items, 7, seed=3)
    counts = {c: int((picked == c).sum()) for c in "abc"}
    assert counts == {"a": 3, "b": 3, "c": 1} and len(images) == 7
    again, _ = calibration_images(items, 7, seed=3)
    assert torch.equal(images, again)
    pool = torch.rand(9, 1, 4, 4)  # a tensor: every image a case, a plain seeded pick
    order = torch.randperm(9, generator=torch.Generator().manual_seed(3))
    assert torch.equal(calibration_images(pool, 5, seed=3)[0], pool[order[:5]])


def test_detectors_saved_before_case_scores_load_without_one(mean_method,
                                                             tmp_path: Path) -> None:
    det = anodiff.create("test-mean", preset="quick")
    det.fit(torch.rand(6, 2, 8, 8) * 0.5)
    state = {k: v for k, v in det.state_dict().items()
             if k not in ("flag_threshold", "case_threshold")}
    write_checkpoint(tmp_path / "older", {"detector": state},
                     {"format": 2, "method": "test-mean", "config": {"gain": 1.0},
                      "input_shape": [2, 8, 8]})
    again = anodiff.load(tmp_path / "older")
    x = torch.rand(2, 2, 8, 8) * 0.5
    assert torch.equal(again.localize(x).anomaly_map, det.localize(x).anomaly_map)
    assert again.case_score(det.localize(x).anomaly_map, x.sum(1) > 0) is None


def test_save_and_load_round_trip(mean_method, tmp_path: Path) -> None:
    det = anodiff.create("test-mean", preset="quick", mask="healthy_fpr")
    det.fit(torch.rand(6, 2, 8, 8) * 0.5)
    det.save(tmp_path / "model")
    again = anodiff.load(tmp_path / "model", device="auto")
    assert isinstance(again, mean_method) and again.config == det.config
    assert torch.equal(again.threshold, det.threshold) and torch.equal(again.mean, det.mean)
    x = torch.rand(3, 2, 8, 8) * 0.5
    ours, theirs = again.localize(x), det.localize(x)
    assert torch.equal(ours.anomaly_map, theirs.anomaly_map)
    assert torch.equal(ours.mask, theirs.mask)


def test_format_1_checkpoints_still_load(mean_method, tmp_path: Path) -> None:
    """The layout before the shared pipeline: one file per network, one of fitted values."""
    det = anodiff.create("test-mean", preset="quick")
    det.fit(torch.rand(6, 2, 8, 8) * 0.5)
    write_checkpoint(tmp_path / "old", {
        "net_net": det.net.state_dict(), "state": {"mean": det.mean}},
        {"method": "test-mean", "config": {"gain": 1.0}, "input_shape": [2, 8, 8]})
    again = anodiff.load(tmp_path / "old")
    x = torch.rand(2, 2, 8, 8) * 0.5
    assert torch.equal(again.localize(x).anomaly_map, det.localize(x).anomaly_map)
    assert not torch.isfinite(again.threshold)  # format 1 had no shared threshold


@pytest.mark.parametrize("shape", ["abc", [2, 8], [0, 8, 8]])
def test_load_names_a_broken_input_shape(mean_method, tmp_path: Path, shape) -> None:
    det = anodiff.create("test-mean", preset="quick")
    det.fit(torch.rand(6, 2, 8, 8) * 0.5)
    write_checkpoint(tmp_path / "bad", {"detector": det.state_dict()},
                     {"format": 2, "method": "test-mean", "config": {}, "input_shape": shape})
    with pytest.raises(anodiff.CheckpointError, match="input_shape"):
        anodiff.load(tmp_path / "bad")


def test_device_option_is_checked() -> None:
    from anodiff.devices import resolve_device

    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in ("cpu", "cuda")
    with pytest.raises(anodiff.AnodiffError, match="not a device"):
        resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(anodiff.AnodiffError, match="no CUDA GPU"):
            resolve_device("cuda:0")


def test_to_moves_every_tensor() -> None:
    det = _fitted(mask="healthy_fpr")
    det.to(torch.float64)
    assert all(t.dtype == torch.float64 for t in det.state_dict().values())
    assert np.isfinite(float(det.threshold))
