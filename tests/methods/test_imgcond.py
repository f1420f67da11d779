"""Baugh's image-conditioned restoration on toy slices: members per fold, early stopping on
held-out tasks, the ensemble's map / uncertainty, seeding, save / load and bad settings.

One quick-preset ensemble (2 members, 24² two-channel toy slices) is trained once per module.
"""

from pathlib import Path

import pytest
import torch
from weak_toys import toy_slices

import anodiff
from anodiff.config import build
from anodiff.diffusion.checkpoint import latest_checkpoint, read_meta
from anodiff.errors import AnodiffError
from anodiff.methods.imgcond import EnsemblePart, ImgCond, ImgCondConfig
from anodiff.methods.training_data import split_validation
from anodiff.scoring.foreground import foreground


@pytest.fixture(scope="module")
def fitted(fitted_on_toys) -> ImgCond:
    return fitted_on_toys("imgcond")  # trained on the 50 healthy toy slices


@pytest.fixture(scope="module")
def lesioned() -> torch.Tensor:
    return toy_slices(6, True, seed=3)[0]


def test_each_fold_trains_its_own_resumable_member(fitted: ImgCond) -> None:
    assert fitted.folds == [2, 6] and len(fitted.members) == 2
    for fold in fitted.folds:
        checkpoint = latest_checkpoint(fitted.run_dir / f"member_{fold}" / "checkpoints")
        meta = read_meta(checkpoint)
        assert "best" in meta and 10 <= meta["best"]["step"] <= meta["step"] <= 40
    first, second = (m.state_dict() for m in fitted.members)
    assert any(not torch.equal(first[k], second[k]) for k in first)


def test_refitting_on_the_same_run_resumes_instead_of_retraining(fitted: ImgCond) -> None:
    again = anodiff.create("imgcond", preset="quick")
    again.run_dir = fitted.run_dir
    again.fit(toy_slices(50, False, seed=0)[0])
    for a, b in zip(fitted.members.state_dict().values(), again.members.state_dict().values(),
                    strict=True):
        assert torch.equal(a, b)


def test_the_ensemble_averages_its_members(fitted: ImgCond, lesioned: torch.Tensor) -> None:
    result = fitted.localize(lesioned)
    restored, nfe = fitted.restore(lesioned, torch.Generator().manual_seed(fitted.config.seed))
    fg = foreground(lesioned)
    maps = torch.where(fg, fitted.member_maps(lesioned, restored), torch.zeros(()))
    assert restored.shape == (2, *lesioned.shape) and nfe == result.nfe == 2 * 5
    assert torch.allclose(result.anomaly_map, maps.mean(0))
    assert torch.allclose(result.uncertainty, maps.std(0, correction=0))
    assert torch.allclose(result.pseudo_healthy, restored.mean(0))
    assert torch.allclose(result.score, result.anomaly_map.flatten(1).mean(1))
    outside = ~foreground(lesioned)
    assert (result.anomaly_map[outside] == 0).all() and not result.mask[outside].any()
    assert 0 <= float(result.pseudo_healthy.min()) <= float(result.pseudo_healthy.max()) <= 1


def test_localize_is_seeded(fitted: ImgCond, lesioned: torch.Tensor) -> None:
    a, b = fitted.localize(lesioned), fitted.localize(lesioned)
    assert torch.equal(a.anomaly_map, b.anomaly_map)
    other = fitted.retuned(seed=1).localize(lesioned)
    assert not torch.equal(a.pseudo_healthy, other.pseudo_healthy)


def test_residual_map_is_the_absolute_difference(fitted: ImgCond, lesioned: torch.Tensor
                                                 ) -> None:
    result = fitted.retuned(map="residual").localize(lesioned)
    restored, _ = fitted.restore(lesioned, torch.Generator().manual_seed(fitted.config.seed))
    per_member = (lesioned[None] - restored).abs().sum(2).mean(0)
    fg = foreground(lesioned)
    assert torch.allclose(result.anomaly_map, torch.where(fg, per_member, torch.zeros(())),
                          atol=1e-6)


def test_save_and_load_give_the_same_maps(fitted: ImgCond, lesioned: torch.Tensor,
                                          tmp_path: Path) -> None:
    loaded = anodiff.load(fitted.save(tmp_path / "model"))
    assert torch.equal(loaded.localize(lesioned).anomaly_map,
                       fitted.localize(lesioned).anomaly_map)


def test_folds_are_trained_settings(fitted: ImgCond) -> None:
    with pytest.raises(AnodiffError, match="trained parts"):
        fitted.retuned(ensemble=EnsemblePart(folds=(1,)))


@pytest.mark.parametrize(("changes", "message"), [
    ({"ensemble": {"folds": (10,)}}, "distinct indices"),
    ({"ensemble": {"folds": (1, 1)}}, "distinct indices"),
    ({"ensemble": {"folds": ()}}, "distinct indices"),
    ({"ensemble": {"identity_probability": 1.0}}, "identity_probability"),
    ({"diffusion": {"max_level": 500}}, "every level"),
    ({"map": "l2"}, "map"),
    ({"steps": 0}, "steps"),
])
def test_bad_settings_are_named(changes: dict, message: str) -> None:
    with pytest.raises(AnodiffError, match=message):
        build(ImgCondConfig, changes, "imgcond")


def test_validation_comes_from_the_val_split_or_is_held_out() -> None:
    healthy = toy_slices(20, False, seed=0)[0]
    train, val = split_validation("imgcond", healthy, healthy, count=8, seed=0)
    assert len(val) == 4 and len(train) == 16  # at most a fifth held out
    assert not any(torch.equal(v, t) for v in val for t in train)
    with pytest.raises(AnodiffError, match="validation"):
        split_validation("imgcond", healthy[:4], healthy[:4], count=8, seed=0)
