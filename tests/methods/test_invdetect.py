"""InvDetect end to end on toy slices (quick preset): shapes, masks, calibration, save/load."""


import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score
from weak_toys import SIZE, fit_on_toys, toy_slices, toy_test_images

import anodiff
from anodiff.diffusion import engine
from anodiff.errors import AnodiffError
from anodiff.methods.invdetect import InvDetect
from anodiff.scoring.foreground import foreground
from anodiff.scoring.graphcut import LAMBDA_CANDIDATES


@pytest.fixture(scope="module")
def fitted(fitted_on_toys) -> InvDetect:
    return fitted_on_toys("invdetect")


@pytest.fixture(scope="module")
def test_images() -> dict[str, torch.Tensor]:
    return toy_test_images()


def test_localize_gives_maps_masks_and_scores_of_the_right_shapes(fitted, test_images) -> None:
    images = torch.cat([test_images["healthy"], test_images["anomalous"]])
    result = fitted.localize(images)
    fg = foreground(images)
    assert result.anomaly_map.shape == (16, SIZE, SIZE) and result.score.shape == (16,)
    assert result.mask.dtype == torch.bool and not (result.mask & ~fg).any()
    assert torch.all(result.anomaly_map[~fg] == 0)
    _, holds_brain = fitted.patches(images)  # every step evaluates the foreground patches
    share = fitted.config.patch_size ** 2 / SIZE ** 2
    expected = fitted.config.inversion_steps * int(holds_brain.sum()) * share / len(images)
    assert result.pseudo_healthy is None and result.nfe == pytest.approx(expected)


def test_auto_precision_keeps_float32_for_its_patch_network(fitted, test_images,
                                                            monkeypatch) -> None:
    monkeypatch.setattr(engine, "has_amx", lambda: True)  # where auto would take bfloat16
    monkeypatch.setattr(engine, "_engines", {})
    monkeypatch.setattr(engine, "_settings", engine.EngineSettings())
    images = test_images["anomalous"][:2]
    auto = fitted.localize(images).anomaly_map
    assert {key[1] for key in engine._engines} == {"float32"}
    engine.configure(precision="bfloat16")  # asked for, it still applies
    assert not torch.equal(fitted.localize(images).anomaly_map, auto)
    assert {key[1] for key in engine._engines} == {"float32", "bfloat16"}


def test_lesions_score_higher_than_healthy_tissue(fitted, test_images) -> None:
    result = fitted.localize(test_images["anomalous"])
    fg = foreground(test_images["anomalous"])
    truth = test_images["truth"][fg].numpy()
    assert roc_auc_score(truth, result.anomaly_map[fg].numpy()) > 0.8
    healthy_scores = fitted.localize(test_images["healthy"]).score
    labels = np.r_[np.zeros(8), np.ones(8)]
    assert roc_auc_score(labels, torch.cat([healthy_scores, result.score]).numpy()) > 0.8


def test_tau_and_lambda_follow_the_papers_rules(fitted, test_images) -> None:
    assert fitted.tau > 0 and fitted.lam in LAMBDA_CANDIDATES
    assert 0 <= float(fitted.calibrated_area) <= 1
    unrefined = fitted.retuned(refine=False)  # the state holds for any mask rule
    result = unrefined.localize(test_images["anomalous"])
    fg = foreground(test_images["anomalous"])
    assert torch.equal(result.mask, (result.anomaly_map > 0) & fg)
    with pytest.raises(AnodiffError, match="stale"):
        fitted.retuned(inversion_steps=3)  # the one-class model was fit on other latents
    other = fitted.retuned(keep_state=True, one_class="gaussian")
    with pytest.raises(AnodiffError, match="refit"):
        other.localize(test_images["anomalous"])
    other.refit(toy_slices(20, False, seed=5)[0])
    assert other.one_class.kind == "gaussian"
    assert other.localize(test_images["anomalous"]).anomaly_map.shape == (8, SIZE, SIZE)


def test_save_then_load_gives_identical_maps_and_masks(fitted, test_images, tmp_path) -> None:
    fitted.save(tmp_path / "model")
    again = anodiff.load(tmp_path / "model")
    a, b = fitted.localize(test_images["anomalous"]), again.localize(test_images["anomalous"])
    assert torch.equal(a.anomaly_map, b.anomaly_map) and torch.equal(a.mask, b.mask)


@pytest.mark.slow
def test_the_gaussian_one_class_model_and_the_fast_inverse_also_localise(tmp_path,
                                                                         test_images) -> None:
    det = fit_on_toys("invdetect", tmp_path, one_class="gaussian", solver="dpmpp2m")
    result = det.localize(test_images["anomalous"])
    fg = foreground(test_images["anomalous"])
    assert roc_auc_score(test_images["truth"][fg].numpy(), result.anomaly_map[fg].numpy()) > 0.8


def test_bad_settings_and_inputs_are_refused(fitted) -> None:
    with pytest.raises(AnodiffError, match="multiple of 2"):
        anodiff.create("invdetect", preset="quick", patch_size=7)  # quick UNet: one halving
    with pytest.raises(AnodiffError, match="multiple of 8"):
        anodiff.create("invdetect", preset="paper", patch_size=12)  # four stages
    with pytest.raises(AnodiffError, match="one_class"):
        anodiff.create("invdetect", preset="quick", one_class="forest")
    with pytest.raises(AnodiffError, match="fit"):
        anodiff.create("invdetect", preset="quick").localize(torch.zeros(1, 2, SIZE, SIZE))
    with pytest.raises(AnodiffError, match="takes . channel"):
        fitted.localize(torch.zeros(1, 1, SIZE, SIZE))


def test_an_image_without_foreground_gets_an_empty_mask_and_a_zero_map(fitted) -> None:
    result = fitted.localize(torch.zeros(2, 2, SIZE, SIZE))
    assert not result.mask.any() and torch.all(result.anomaly_map == 0)
