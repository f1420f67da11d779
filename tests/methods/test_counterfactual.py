"""counterfactual (Sanchez 2022, classifier-free guidance) on a toy weakly labelled problem.

Toy "brains": two-channel discs on a zero background; anomalous slices carry a bright blob
in both channels. ~100 labelled training slices; the quick preset. The tests run
single-threaded: the quick network is tiny, and on the shared 2-core machine a 2-thread
training step of it stalled at 1.7 s against 0.06 s with one thread.
"""

from pathlib import Path

import pytest
import torch
from weak_toys import SIZE, residual, toy_test_images

import anodiff
from anodiff.errors import AnodiffError
from anodiff.methods.counterfactual import Counterfactual
from anodiff.scoring.foreground import foreground


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def fitted(fitted_on_toys) -> Counterfactual:
    return fitted_on_toys("counterfactual")


@pytest.fixture(scope="module")
def test_images() -> dict[str, torch.Tensor]:
    return toy_test_images()


def test_fits_and_localises_end_to_end(fitted: Counterfactual, test_images: dict) -> None:
    images = test_images["anomalous"]
    res = fitted.localize(images)
    assert res.anomaly_map.shape == (8, SIZE, SIZE)
    assert torch.isfinite(res.anomaly_map).all() and (res.anomaly_map >= 0).all()
    assert res.pseudo_healthy.shape == images.shape and res.uncertainty is None
    assert res.mask.dtype == torch.bool and res.mask.shape == (8, SIZE, SIZE)
    assert res.score.shape == (8,)
    assert res.nfe == 10 + 2 * 10  # 10 encoding steps, 10 guided decoding steps at 2 NFE
    assert fitted.retuned(cfg_scale=1.0).localize(images[:2]).nfe == 10 + 10
    assert {name for name, _ in fitted.named_children()} == {"unet"}
    assert (fitted.run_dir / "unet" / "checkpoints" / "latest").is_file()


def test_guidance_toward_healthy_removes_the_blob(fitted: Counterfactual,
                                                  test_images: dict) -> None:
    anomalous, truth = test_images["anomalous"], test_images["truth"]
    healthy = test_images["healthy"]
    res_a, res_h = fitted.localize(anomalous), fitted.localize(healthy)
    in_blob = residual(anomalous, res_a)[truth].mean()
    assert in_blob > 2 * residual(healthy, res_h)[foreground(healthy)].mean()
    assert res_a.score.mean() > res_h.score.mean()
    conditional_only = fitted.retuned(cfg_scale=1.0).localize(anomalous)
    assert in_blob > residual(anomalous, conditional_only)[truth].mean()


def test_ddim_encoding_round_trips_far_better_than_noising(fitted: Counterfactual,
                                                           test_images: dict) -> None:
    healthy = test_images["healthy"]
    # encoding and decoding both unconditional (null label, w = 0): a plain round trip
    round_trip = dict(encode_label="null", cfg_scale=0.0)
    ddim = residual(healthy, fitted.retuned(**round_trip).localize(healthy)).mean()
    ddpm = fitted.retuned(encoding="ddpm", **round_trip).localize(healthy)
    assert ddim < residual(healthy, ddpm).mean() / 2.5
    assert ddpm.nfe == 10


def test_the_decoding_can_take_its_own_hops(fitted: Counterfactual, test_images: dict) -> None:
    anomalous, truth = test_images["anomalous"], test_images["truth"]
    healthy = test_images["healthy"]
    default = fitted.localize(anomalous)
    same = fitted.retuned(decode_steps=10).localize(anomalous)
    assert torch.equal(same.anomaly_map, default.anomaly_map)
    uneven = fitted.retuned(steps=2, decode_steps=9)
    res_a, res_h = uneven.localize(anomalous), uneven.localize(healthy)
    assert res_a.nfe == 2 + 2 * 9  # two encoding hops, nine guided decoding hops
    assert not torch.equal(res_a.anomaly_map, default.anomaly_map)
    assert residual(anomalous, res_a)[truth].mean() > \
        2 * residual(healthy, res_h)[foreground(healthy)].mean()
    assert fitted.retuned(encoding="ddpm", decode_steps=4).localize(anomalous[:2]).nfe == 2 * 4


def test_labels_are_explicit(fitted: Counterfactual, test_images: dict) -> None:
    anomalous, truth = test_images["anomalous"], test_images["truth"]
    toward_healthy = fitted.localize(anomalous)
    toward_anomalous = fitted.retuned(healthy_label=1).localize(anomalous)
    assert residual(anomalous, toward_anomalous)[truth].mean() < \
        0.5 * residual(anomalous, toward_healthy)[truth].mean()
    null_encoded = fitted.retuned(encode_label="null").localize(anomalous)
    assert not torch.equal(null_encoded.anomaly_map, toward_healthy.anomaly_map)


def test_save_and_load_give_identical_maps(fitted: Counterfactual, test_images: dict,
                                           tmp_path: Path) -> None:
    images = test_images["anomalous"]
    fitted.save(tmp_path / "model")
    again = anodiff.load(tmp_path / "model")
    assert isinstance(again, Counterfactual) and again.config == fitted.config
    assert torch.equal(again.localize(images).anomaly_map, fitted.localize(images).anomaly_map)


def test_bad_settings_are_refused() -> None:
    with pytest.raises(AnodiffError, match="label_dropout"):
        anodiff.create("counterfactual", preset="quick", label_dropout=0.0)
    with pytest.raises(AnodiffError, match="encode_label"):
        anodiff.create("counterfactual", preset="quick", encode_label="healthy")
    with pytest.raises(AnodiffError, match="cfg_scale"):
        anodiff.create("counterfactual", preset="quick", cfg_scale=-1.0)
    with pytest.raises(AnodiffError, match="solver"):
        anodiff.create("counterfactual", preset="quick", solver="ddpm")
    with pytest.raises(AnodiffError, match="decode_steps"):
        anodiff.create("counterfactual", preset="quick", decode_steps=0)
