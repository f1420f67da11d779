"""AnoDDPM on toy brains: it trains on healthy discs, repairs a blob, is seeded, and round-trips.

One quick-preset model per noise kind (16² one-channel discs, 80 training steps) is trained
once per module and shared; settings that need no retraining are tried on copies of it.
Torch runs on one thread here: these tiny networks gain nothing from a second one, and on a
machine whose cores are busy two threads made the module several times slower.
"""

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

import anodiff
from anodiff.errors import AnodiffError
from anodiff.methods import preset_changes
from anodiff.methods.anoddpm import AnoDDPM, AnoDDPMConfig, noise_options
from anodiff.scoring.foreground import foreground

SIZE = 16


def toy_brains(n: int, lesion: bool, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Textured discs (darker core) on a zero background; optional bright or dark blob.

    Even images get a bright blob (0.95), odd ones a dark blob (0.05), radius 3, inside
    the disc; returns images (n, 1, SIZE, SIZE) in [0, 1] and the blob masks (n, SIZE, SIZE).
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    images = np.zeros((n, 1, SIZE, SIZE), np.float32)
    truth = np.zeros((n, SIZE, SIZE), bool)
    for i in range(n):
        cy, cx = SIZE / 2 + rng.normal(0, 0.7, 2)
        r = np.hypot(yy - cy, xx - cx)
        brain = r < SIZE * (0.40 + rng.normal(0, 0.01))
        image = 0.55 * brain - 0.15 * (r < SIZE * 0.2) + brain * 0.03 * rng.normal(size=r.shape)
        if lesion:
            ly, lx = cy + rng.uniform(-4, 4), cx + rng.uniform(-4, 4)
            truth[i] = (np.hypot(yy - ly, xx - lx) < 3) & brain
            image[truth[i]] = 0.95 if i % 2 == 0 else 0.05
        images[i, 0] = image
    return torch.from_numpy(images.clip(0, 1)), torch.from_numpy(truth)


def fit_on_toy_brains(method: str, run_dir: Path, **settings: object) -> anodiff.Detector:
    """``method`` at its quick preset (with ``settings``) fitted single-threaded on 64
    healthy toy brains; the caller's thread count is restored."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    det = anodiff.create(method, preset="quick", **settings)
    det.run_dir = run_dir
    det.fit(toy_brains(64, False, seed=0)[0])
    torch.set_num_threads(threads)
    return det


def variant(det: AnoDDPM, **changes: object) -> AnoDDPM:
    """A copy of a fitted detector with other test-time settings (same weights, threshold)."""
    return det.retuned(keep_state=True, **changes)


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module", params=[
    "simplex", pytest.param("gaussian", marks=pytest.mark.slow)])
def fitted(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[AnoDDPM]:
    torch.manual_seed(0)
    yield fit_on_toy_brains("anoddpm", tmp_path_factory.mktemp(f"run_{request.param}"),
                            noise=request.param)


@pytest.fixture(scope="module")
def lesioned() -> tuple[torch.Tensor, torch.Tensor]:
    return toy_brains(8, True, seed=1)


def test_fits_and_localises_end_to_end(fitted: AnoDDPM, lesioned) -> None:
    images, _ = lesioned
    assert (fitted.run_dir / "unet" / "checkpoints" / "latest").is_file()
    res = fitted.localize(images)
    assert res.anomaly_map.shape == (8, SIZE, SIZE)
    assert torch.isfinite(res.anomaly_map).all() and (res.anomaly_map >= 0).all()
    assert res.pseudo_healthy.shape == images.shape
    assert res.mask.dtype == torch.bool and res.mask.shape == (8, SIZE, SIZE)
    assert res.score.shape == (8,) and res.uncertainty is None
    assert res.nfe == fitted.config.steps * fitted.config.samples == 25
    assert torch.isfinite(fitted.threshold)


def test_reconstruction_changes_the_lesion_more_than_healthy_tissue(fitted: AnoDDPM, lesioned
                                                                    ) -> None:
    images, truth = lesioned
    maps = fitted.localize(images).anomaly_map
    healthy_tissue = foreground(images) & ~truth
    inside = torch.stack([m[t].mean() for m, t in zip(maps, truth, strict=True)])
    outside = torch.stack([m[h].mean() for m, h in zip(maps, healthy_tissue, strict=True)])
    assert (inside > outside).all()
    assert maps[truth].mean() > 2 * maps[healthy_tissue].mean()


def test_seed_fixes_the_maps_and_samples_give_uncertainty(fitted: AnoDDPM, lesioned) -> None:
    images, _ = lesioned
    first = fitted.localize(images)
    assert torch.equal(first.anomaly_map, fitted.localize(images).anomaly_map)
    assert not torch.equal(first.anomaly_map, variant(fitted, seed=1).localize(images).anomaly_map)
    averaged = variant(fitted, samples=3).localize(images)
    assert averaged.nfe == 3 * 25
    assert averaged.uncertainty.shape == (8, SIZE, SIZE)
    assert (averaged.uncertainty >= 0).all() and averaged.uncertainty.max() > 0
    assert (averaged.uncertainty[~foreground(images)] == 0).all()


def test_save_and_load_give_identical_maps(fitted: AnoDDPM, lesioned, tmp_path: Path) -> None:
    images, _ = lesioned
    fitted.save(tmp_path / "model")
    again = anodiff.load(tmp_path / "model")
    assert again.config == fitted.config
    mine, theirs = fitted.localize(images), again.localize(images)
    assert torch.equal(theirs.anomaly_map, mine.anomaly_map)
    assert torch.equal(theirs.mask, mine.mask)


@pytest.mark.parametrize("solver", ["ddim", "dpmpp2m"])
def test_fast_solvers_and_otsu_masks(fitted: AnoDDPM, lesioned, solver: str) -> None:
    images, _ = lesioned
    res = variant(fitted, solver=solver, steps=5, mask="otsu", smoothing_sigma=1.0
                  ).localize(images)
    assert res.nfe == 5
    assert torch.isfinite(res.anomaly_map).all() and res.mask.any()
    assert not (res.mask & ~foreground(images)).any()


def test_simplex_settings_scale_with_the_image() -> None:
    paper = AnoDDPM.presets["paper"]
    assert noise_options(paper, 256) == {"octaves": 6, "persistence": 0.8, "frequency": 64.0}
    cpu = AnoDDPM.presets["cpu"]
    assert noise_options(cpu, 256) == {"octaves": 6, "persistence": 0.8, "frequency": 64.0}
    assert noise_options(cpu, 64) == {"octaves": 4, "persistence": 0.8, "frequency": 16.0}
    assert noise_options(replace(cpu, noise="gaussian"), 64) == {}


def test_bad_settings_and_inputs_are_refused(fitted: AnoDDPM) -> None:
    with pytest.raises(AnodiffError, match="level"):
        anodiff.create("anoddpm", preset="cpu", level=600)  # trained on levels <= 400
    with pytest.raises(AnodiffError, match="samples"):
        AnoDDPM(AnoDDPMConfig(samples=0))
    with pytest.raises(AnodiffError, match="fit"):
        anodiff.create("anoddpm", preset="quick").localize(torch.zeros(1, 1, SIZE, SIZE))
    with pytest.raises(AnodiffError, match="takes . channel"):
        fitted.localize(torch.zeros(1, 2, SIZE, SIZE))


def test_retuning_refuses_to_keep_a_stale_calibrated_threshold(fitted: AnoDDPM) -> None:
    with pytest.raises(AnodiffError, match="calibrated"):
        fitted.retuned(level=10)
    kept = fitted.retuned(keep_state=True, level=10)
    assert kept.config.level == 10 and torch.equal(kept.threshold, fitted.threshold)


def test_retuning_settings_its_threshold_does_not_depend_on_is_allowed(fitted: AnoDDPM) -> None:
    otsu = fitted.retuned(mask="otsu", score_percentile=95.0)
    assert otsu.config.mask == "otsu" and torch.equal(otsu.threshold, fitted.threshold)


def test_preset_changes_name_what_fast_changes_and_refuse_other_training() -> None:
    assert preset_changes("anoddpm", "fast") == {"steps": 1, "solver": "ddim"}
    with pytest.raises(AnodiffError, match=r"quick preset trains \['diffusion'\]"):
        preset_changes("anoddpm", "quick")
    with pytest.raises(AnodiffError, match="unknown preset 'turbo'"):
        preset_changes("anoddpm", "turbo")
