"""FNDM on the toy weakly labelled problem: the memory bank sees the lesions, the hybrid
conditions are built as the paper says, the solver spends one evaluation per step, the
ablation switches change the network's inputs, and a saved run reloads with its bank."""

import json
from pathlib import Path

import pytest
import torch
from weak_toys import toy_slices, toy_test_images

import anodiff
from anodiff.diffusion.guidance import unet_eps
from anodiff.errors import AnodiffError, CheckpointError
from anodiff.methods.fndm import FNDM, FNDMConfig, HybridConditions, HybridPairs, HybridProvider
from anodiff.methods.translation import guided_decoder
from anodiff.scoring.foreground import foreground


@pytest.fixture(scope="module")
def fitted(fitted_on_toys) -> FNDM:
    return fitted_on_toys("fndm")


@pytest.fixture(scope="module")
def test_images() -> dict[str, torch.Tensor]:
    return toy_test_images()


def test_memory_bank_scores_lesions_above_healthy_tissue(fitted: FNDM, test_images: dict
                                                         ) -> None:
    mapper = fitted.coarse_mapper()
    sick, truth = test_images["anomalous"], test_images["truth"]
    distances = mapper.distances(sick)
    outside = foreground(sick) & ~truth
    assert float(distances[truth].mean()) > 1.5 * float(distances[outside].mean())
    healthy_seg = mapper(test_images["healthy"])
    assert healthy_seg.shape == (8, 1, 24, 24) and 0 <= healthy_seg.min() <= healthy_seg.max() <= 1
    assert float((healthy_seg > 0).float().mean()) < 0.1  # the healthy 99th percentile is 0
    assert float(mapper(sick)[:, 0][truth].mean()) > 0.5


def test_hybrid_pairs_corrupt_healthy_slices_inside_their_mask() -> None:
    images = torch.cat([toy_slices(4, False, seed=0)[0], toy_slices(2, True, seed=1)[0]])
    labels = torch.tensor([0, 0, 0, 0, 1, 1])
    maps = torch.rand(2, 1, 24, 24)
    pairs = HybridPairs(images, labels, maps, HybridConditions(), length=60, seed=0)
    for index in range(12):
        item = pairs[index]
        row = index % 6
        corrupted, coarse = item["cond"][:2], item["cond"][2]
        assert torch.equal(item["image"], images[row]) and item["label"] == labels[row]
        if labels[row] == 0:
            mask = coarse.bool()
            assert torch.equal(corrupted[:, ~mask], images[row][:, ~mask])
            assert not (mask & ~foreground(images[row:row + 1])[0]).any()
        else:
            assert torch.equal(corrupted, images[row]) and torch.equal(coarse, maps[row - 4, 0])
    again = HybridPairs(images, labels, maps, HybridConditions(), length=60, seed=0)
    assert torch.equal(again[3]["cond"], pairs[3]["cond"])


def localize_counting_unet_calls(detector: FNDM, images: torch.Tensor
                                 ) -> tuple[anodiff.AnomalyResult, int]:
    """The detector's localisation of ``images`` and how often its UNet ran (a hook)."""
    calls = []
    hook = detector.unet.register_forward_hook(lambda *_: calls.append(1))
    try:
        return detector.localize(images), len(calls)
    finally:
        hook.remove()


def test_localisation_spends_one_unet_evaluation_per_step(fitted: FNDM, test_images: dict
                                                          ) -> None:
    result, calls = localize_counting_unet_calls(fitted, test_images["anomalous"])
    assert result.nfe == 2 * fitted.config.steps == calls  # 10 encoding + 10 decoding
    sick, truth = test_images["anomalous"], test_images["truth"]
    outside = foreground(sick) & ~truth
    assert float(result.anomaly_map[truth].mean()) > 2 * float(result.anomaly_map[outside].mean())


def test_ddpm_noising_spends_only_its_decoding_hops(fitted: FNDM, test_images: dict) -> None:
    """Wolleb's DDPM noising (``encoding: ddpm``, issue 23's 20-evaluation candidate for
    FNDM) costs no evaluation and the ancestral decoding one per hop; its noise comes from
    the seed, so the same call gives the same map. (Whether it keeps the figures is a question
    for the benchmark: on the toy the quick model's stochastic round trip is too rough.)"""
    noised = fitted.retuned(keep_state=True, encoding="ddpm", level=10, steps=6)
    result, calls = localize_counting_unet_calls(noised, test_images["anomalous"])
    assert result.nfe == 6 == calls
    again = noised.localize(test_images["anomalous"])
    assert torch.equal(result.anomaly_map, again.anomaly_map)


@pytest.mark.parametrize(("image", "coarse", "extra"), [(True, True, 3), (True, False, 2),
                                                         (False, True, 1), (False, False, 0)])
def test_ablation_switches_set_the_condition_channels(image: bool, coarse: bool, extra: int
                                                      ) -> None:
    det = FNDM(FNDMConfig(hybrid=HybridConditions(image=image, coarse_map=coarse)))
    det.build((2, 24, 24))
    assert det.unet.conv_in.conv.in_channels == 2 + extra


def test_without_classifier_gradient_the_decoder_is_the_encoder(fitted: FNDM) -> None:
    plain = fitted.retuned(scale=0.0)
    conditioned = unet_eps(plain.unet)
    assert guided_decoder(conditioned, plain.classifier, plain.config, plain.schedule) \
        is conditioned
    assert guided_decoder(conditioned, fitted.classifier, fitted.config, fitted.schedule) \
        is not conditioned


def test_a_study_injects_its_own_conditions(fitted: FNDM, test_images: dict) -> None:
    """The oracle study: the true lesion mask as x_seg, through a provider, no patching."""
    sick, truth = test_images["anomalous"], test_images["truth"]
    default = fitted.localize(sick).anomaly_map
    oracle = HybridProvider(image=True, coarse=lambda x: truth[:, None].float().to(x))
    fitted.conditions = oracle
    try:
        given = fitted.localize(sick).anomaly_map
    finally:
        fitted.conditions = None
    assert not torch.equal(given, default)
    assert torch.equal(fitted.localize(sick).anomaly_map, default)


def test_save_and_load_keep_the_bank(fitted: FNDM, test_images: dict, tmp_path: Path) -> None:
    loaded = anodiff.load(fitted.save(tmp_path / "model"))
    assert torch.equal(loaded.memory.features, fitted.memory.features)
    assert torch.equal(loaded.reference, fitted.reference)
    sick = test_images["anomalous"]
    assert torch.equal(loaded.localize(sick).anomaly_map, fitted.localize(sick).anomaly_map)
    meta = json.loads((tmp_path / "model" / "meta.json").read_text())
    meta["config"]["hybrid"]["coarse_map"] = False  # a config the saved bank does not fit
    (tmp_path / "model" / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="do not fit"):
        anodiff.load(tmp_path / "model")


@pytest.mark.parametrize(("settings", "message"), [
    ({"corruption": "paint"}, "corruption"),
    ({"feature_blocks": ()}, "feature_blocks"),
    ({"coreset_size": 0}, "coreset_size"),
])
def test_bad_settings_are_named(settings: dict, message: str) -> None:
    with pytest.raises(AnodiffError, match=message):
        HybridConditions(**settings)


def test_hybrid_settings_need_retraining(fitted: FNDM) -> None:
    for keep_state in (False, True):  # the networks and the bank were built with them
        with pytest.raises(AnodiffError, match="trained parts"):
            fitted.retuned(keep_state=keep_state, hybrid=HybridConditions(image=False))
