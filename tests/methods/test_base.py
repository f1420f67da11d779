from dataclasses import dataclass

import pytest
import torch
from typer.testing import CliRunner

import anodiff
from anodiff.cli import app
from anodiff.methods import base
from anodiff.methods.base import AnomalyResult, Detector, register


@dataclass(frozen=True)
class MeanConfig:
    smoothing: float = 0.0


@pytest.fixture
def registered_method():
    @register("test-mean")
    class MeanDetector(Detector):
        supervision = "unsupervised"
        description = "distance to the training mean (test double)"
        presets = {"quick": MeanConfig(), "cpu": MeanConfig(1.0)}

        def fit(self, data):
            self.build(tuple(data.shape[1:]))
            self.mean = data.mean(0)

        def state(self):
            return {"mean": self.mean}

        def load_state(self, state):
            self.mean = state["mean"]

        def localize(self, images):
            self.check_fitted()
            amap = (images - self.mean).abs().sum(1)
            return AnomalyResult(anomaly_map=amap, score=amap.flatten(1).max(1).values, nfe=0)

    yield MeanDetector
    del base._REGISTRY["test-mean"]


def test_create_builds_a_registered_method_with_overrides(registered_method) -> None:
    det = anodiff.create("test-mean", preset="quick", smoothing=2.0)
    assert isinstance(det, registered_method) and det.config.smoothing == 2.0
    assert anodiff.create("test-mean").config.smoothing == 1.0  # cpu is the default preset
    det.fit(torch.zeros(4, 1, 8, 8))
    res = det.localize(torch.ones(2, 1, 8, 8))
    assert res.anomaly_map.shape == (2, 8, 8) and res.score.tolist() == [1.0, 1.0]
    names = [m.name for m in anodiff.methods()]
    assert "test-mean" in names
    output = CliRunner().invoke(app, ["methods"]).output
    assert "test-mean" in output and "unsupervised" in output


def test_create_names_unknown_methods_presets_and_settings(registered_method) -> None:
    with pytest.raises(anodiff.AnodiffError, match="unknown method 'nope'"):
        anodiff.create("nope")
    with pytest.raises(anodiff.AnodiffError, match="unknown preset 'paper'"):
        anodiff.create("test-mean", preset="paper")
    with pytest.raises(anodiff.AnodiffError, match=r"unknown setting\(s\) \['sigma'\]"):
        anodiff.create("test-mean", sigma=1)


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


def test_save_and_load_round_trip(registered_method, tmp_path) -> None:
    det = anodiff.create("test-mean", preset="quick", smoothing=0.5)
    with pytest.raises(anodiff.AnodiffError, match="call fit"):
        det.localize(torch.zeros(1, 1, 8, 8))
    det.fit(torch.rand(6, 2, 8, 8))
    det.save(tmp_path / "model")
    again = anodiff.load(tmp_path / "model")
    assert isinstance(again, registered_method) and again.config == det.config
    x = torch.rand(3, 2, 8, 8)
    assert torch.equal(again.localize(x).anomaly_map, det.localize(x).anomaly_map)
