"""diffano (Wolleb 2022) on a toy weakly labelled problem, with the quick preset.

Toy "brains": two-channel discs on a zero background; anomalous slices carry a bright blob
in both channels. ~100 labelled training slices. The tests run single-threaded: the quick
networks are tiny, and on the shared 2-core machine a 2-thread training step of them
stalled at 1.7 s against 0.06 s with one thread.
"""

from pathlib import Path

import pytest
import torch
from weak_toys import SIZE, residual, toy_test_images

import anodiff
from anodiff.errors import AnodiffError
from anodiff.methods.diffano import DiffAno
from anodiff.scoring.foreground import foreground


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def fitted(fitted_on_toys) -> DiffAno:
    return fitted_on_toys("diffano")


@pytest.fixture(scope="module")
def test_images() -> dict[str, torch.Tensor]:
    return toy_test_images()


def test_fits_and_localises_end_to_end(fitted: DiffAno, test_images: dict) -> None:
    images = test_images["anomalous"]
    res = fitted.localize(images)
    assert res.anomaly_map.shape == (8, SIZE, SIZE)
    assert torch.isfinite(res.anomaly_map).all() and (res.anomaly_map >= 0).all()
    assert res.pseudo_healthy.shape == images.shape and res.uncertainty is None
    assert res.mask.dtype == torch.bool and res.mask.shape == (8, SIZE, SIZE)
    assert res.score.shape == (8,)
    assert res.nfe == 10 + 10  # quick: 10 encoding + 10 decoding steps of the UNet
    assert {name for name, _ in fitted.named_children()} == {"unet", "classifier"}
    for part in ("unet", "classifier"):  # each part checkpoints under run_dir (resumable)
        assert (fitted.run_dir / part / "checkpoints" / "latest").is_file()


def test_guidance_toward_healthy_removes_the_blob(fitted: DiffAno, test_images: dict) -> None:
    anomalous, truth = test_images["anomalous"], test_images["truth"]
    healthy = test_images["healthy"]
    res_a, res_h = fitted.localize(anomalous), fitted.localize(healthy)
    in_blob = residual(anomalous, res_a)[truth].mean()
    on_healthy = residual(healthy, res_h)[foreground(healthy)].mean()
    assert in_blob > 3 * on_healthy
    assert res_a.score.mean() > res_h.score.mean()
    unguided = fitted.retuned(scale=0.0).localize(anomalous)
    assert in_blob > 3 * residual(anomalous, unguided)[truth].mean()


def test_ddim_encoding_round_trips_far_better_than_noising(fitted: DiffAno,
                                                           test_images: dict) -> None:
    healthy = test_images["healthy"]
    ddim = residual(healthy, fitted.retuned(scale=0.0).localize(healthy)).mean()
    ddpm_det = fitted.retuned(scale=0.0, encoding="ddpm")
    ddpm = ddpm_det.localize(healthy)
    assert ddim < residual(healthy, ddpm).mean() / 2.5
    assert ddpm.nfe == 10  # no network evaluation to noise with q_sample
    assert torch.equal(ddpm_det.localize(healthy).anomaly_map, ddpm.anomaly_map)  # seeded
    reseeded = fitted.retuned(scale=0.0, encoding="ddpm", seed=1).localize(healthy)
    assert not torch.equal(reseeded.anomaly_map, ddpm.anomaly_map)


def test_the_healthy_label_is_explicit(fitted: DiffAno, test_images: dict) -> None:
    anomalous, truth = test_images["anomalous"], test_images["truth"]
    toward_healthy = fitted.localize(anomalous)
    toward_anomalous = fitted.retuned(healthy_label=1).localize(anomalous)
    assert not torch.equal(toward_healthy.anomaly_map, toward_anomalous.anomaly_map)
    assert residual(anomalous, toward_anomalous)[truth].mean() < \
        0.5 * residual(anomalous, toward_healthy)[truth].mean()


def test_save_and_load_give_identical_maps(fitted: DiffAno, test_images: dict,
                                           tmp_path: Path) -> None:
    images = test_images["anomalous"]
    fitted.save(tmp_path / "model")
    again = anodiff.load(tmp_path / "model")
    assert isinstance(again, DiffAno) and again.config == fitted.config
    assert torch.equal(again.localize(images).anomaly_map, fitted.localize(images).anomaly_map)


def test_bad_input_is_refused(fitted: DiffAno) -> None:
    with pytest.raises(AnodiffError, match="image labels"):
        anodiff.create("diffano", preset="quick").fit(torch.zeros(4, 2, SIZE, SIZE))
    with pytest.raises(AnodiffError, match="healthy \\(0\\) and anomalous \\(1\\)"):
        anodiff.create("diffano", preset="quick").fit(
            [{"image": torch.zeros(2, SIZE, SIZE), "label": 0}] * 4)
    with pytest.raises(AnodiffError, match="takes . channel"):
        fitted.localize(torch.zeros(2, 1, SIZE, SIZE))
    with pytest.raises(AnodiffError, match="level must be in"):
        anodiff.create("diffano", preset="quick", level=101)
    with pytest.raises(AnodiffError, match="healthy_label"):
        anodiff.create("diffano", preset="quick", healthy_label=2)
    with pytest.raises(AnodiffError, match="max_level"):
        anodiff.create("diffano", preset="cpu", level=600)


def test_retuning_changes_test_time_settings_only(fitted: DiffAno) -> None:
    other = fitted.retuned(level=30, scale=5)
    assert (other.config.level, other.config.scale) == (30, 5.0)
    assert other.unet is fitted.unet and other.classifier is fitted.classifier
    with pytest.raises(AnodiffError, match="trained parts"):
        fitted.retuned(diffusion={"net": "cpu"})
    with pytest.raises(AnodiffError, match="unknown setting"):
        fitted.retuned(levle=30)
    with pytest.raises(AnodiffError, match="level"):
        fitted.retuned(level="high")
