"""THOR on toy brains: with the same model, noise and level as AnoDDPM, the harmonised
trajectory ends closer to the input on healthy tissue (THOR's point, Bercea 2024) and still
repairs the lesion; its helpers against exact references.

One quick AnoDDPM model (simplex noise, 16² discs) is trained once per module and THOR runs
on its weights, so the comparison isolates the decoder. The conformance suite covers
fitting, saving, NFE counting and bad input for ``thor`` like every method.
"""


import numpy as np
import pytest
import torch
from scipy import stats
from test_anoddpm import fit_on_toy_brains, toy_brains

import anodiff
from anodiff.errors import AnodiffError
from anodiff.methods.anoddpm import AnoDDPM
from anodiff.methods.thor import Thor, ThorConfig, harmonic_mean, region_weight, segment_hops
from anodiff.scoring.foreground import foreground

LEVEL, HARMONISE, STEPS = 40, (30, 20, 10), 12


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[AnoDDPM, Thor]:
    """AnoDDPM (quick, simplex, L = 40, 12 hops) and THOR on the same weights and settings."""
    ano = fit_on_toy_brains("anoddpm", tmp_path_factory.mktemp("anoddpm"), level=LEVEL,
                            steps=STEPS)
    thor = Thor(Thor.presets["quick"])
    thor.prepare(ano.input_shape)
    thor.unet.load_state_dict(ano.unet.state_dict())
    assert (thor.config.level, thor.config.harmonise, thor.config.steps) == (LEVEL, HARMONISE,
                                                                             STEPS)
    return ano, thor


def reconstructions(det: AnoDDPM, images: torch.Tensor, seed: int = 0):
    return det.step(images, torch.Generator().manual_seed(seed))


@pytest.mark.slow  # trains a model; the conformance suite covers the contract by default
def test_harmonisation_keeps_healthy_tissue_closer_to_the_input(pair) -> None:
    ano, thor = pair
    images, _ = toy_brains(16, False, seed=3)
    brain = foreground(images)
    plain = (images - reconstructions(ano, images).pseudo_healthy).abs()[:, 0][brain].mean()
    harmonised = (images - reconstructions(thor, images).pseudo_healthy).abs()[:, 0][brain]
    assert harmonised.mean() < 0.8 * plain  # 0.64-0.69 over three seeds


@pytest.mark.slow  # trains a model; the conformance suite covers the contract by default
def test_the_lesion_is_still_repaired_and_mapped(pair) -> None:
    _, thor = pair
    images, truth = toy_brains(8, True, seed=1)
    raw = reconstructions(thor, images)
    healthy_tissue = foreground(images) & ~truth
    assert raw.anomaly_map[truth].mean() > 3 * raw.anomaly_map[healthy_tissue].mean()
    change = (images - raw.pseudo_healthy).abs()[:, 0]
    assert change[truth].mean() > 2 * change[healthy_tissue].mean()
    assert raw.nfe == STEPS + len(HARMONISE)


@pytest.mark.slow  # trains a model; the conformance suite covers the contract by default
def test_structure_factor_and_seed(pair) -> None:
    _, thor = pair
    images, _ = toy_brains(4, True, seed=4)
    first = reconstructions(thor, images)
    assert torch.equal(first.anomaly_map, reconstructions(thor, images).anomaly_map)
    assert not torch.equal(first.anomaly_map, reconstructions(thor, images, seed=1).anomaly_map)
    residual_only = thor.retuned(keep_state=True, structure="none")
    raw = reconstructions(residual_only, images)
    assert torch.isfinite(raw.anomaly_map).all() and (raw.anomaly_map >= 0).all()
    assert not torch.allclose(raw.anomaly_map, first.anomaly_map)


def test_segment_hops_spread_the_steps() -> None:
    assert segment_hops((250, 200, 150, 100, 50, 0), 25) == [5, 5, 5, 5, 5]
    hops = segment_hops((350, 300, 150, 50, 0), 20)
    assert sum(hops) == 20 and hops == [3, 8, 6, 3]  # shares 2.9, 8.6, 5.7, 2.9
    assert segment_hops((40, 39, 0), 5) == [1, 4]  # a one-level segment takes one hop
    assert segment_hops((10, 5, 0), 100) == [5, 5]  # never more hops than levels


def test_region_weight_widens_the_normalised_map() -> None:
    anomaly_map = torch.zeros(2, 15, 15)
    anomaly_map[0, 7, 7] = 4.0
    anomaly_map[1, 2, 2] = 0.5
    weight = region_weight(anomaly_map, 5)
    assert weight.shape == (2, 1, 15, 15)
    assert weight[0, 0, 7, 7] == 1 and weight[1, 0, 2, 2] == 1  # per-image normalisation
    assert torch.all(weight[0, 0, 5:10, 5:10] >= 0.5)  # the 5 x 5 dilation
    assert weight[0, 0, 0, 0] == 0 and weight[0, 0, 7, 11] == 0


def test_harmonic_mean_agrees_with_scipy() -> None:
    rng = np.random.default_rng(0)
    maps = [torch.from_numpy(rng.uniform(0.01, 2, (3, 8, 8))) for _ in range(4)]
    expected = stats.hmean(np.stack([m.numpy() for m in maps]), axis=0)
    np.testing.assert_allclose(harmonic_mean(maps).numpy(), expected, rtol=1e-10)
    maps[2][0, 1, 1] = 0.0
    assert harmonic_mean(maps)[0, 1, 1] < 1e-7


def test_bad_settings_are_refused() -> None:
    with pytest.raises(AnodiffError, match="harmonise"):
        ThorConfig(harmonise=(100, 150))
    with pytest.raises(AnodiffError, match="no level below the noise level 40"):
        ThorConfig(level=40, harmonise=(100, 50), levels=(200, 40))
    assert ThorConfig(level=100, harmonise=(150, 100, 50)).harmonised_levels(100) == (50,)
    with pytest.raises(AnodiffError, match="one hop per segment"):
        ThorConfig(steps=3)
    with pytest.raises(AnodiffError, match="ssim_window"):
        ThorConfig(ssim_window=4)
    with pytest.raises(AnodiffError, match="level"):
        anodiff.create("thor", preset="cpu", level=600)
