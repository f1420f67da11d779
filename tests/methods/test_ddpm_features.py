"""ddpm-features: a pixel head on k labelled slices over the features of a DDPM trained on
every slice without labels (Baranchuk 2021).

The toy (``shape_toys``): a lesion square and a non-lesion disc of equal brightness, so
the head must read shape from the features. The DDPM sees all 64 training slices, the head
the masks of ``K`` of them only.
"""

import pytest
import torch
from shape_toys import squares_and_discs

import anodiff
from anodiff.diffusion.training import TrainConfig
from anodiff.evaluation.metrics import Overlap
from anodiff.methods.ddpm_features import LABELLED_RECORD, HeadPart
from anodiff.methods.parts import DiffusionPart

K = 8
LEVELS = (5, 15)


def toy_items(n: int, seed: int) -> list[dict]:
    images, masks = squares_and_discs(n, seed)
    return [{"image": x, "mask": m, "case": f"case{i // 4}"}
            for i, (x, m) in enumerate(zip(images, masks, strict=True))]


def configured(ddpm_steps: int) -> anodiff.Detector:
    return anodiff.create(
        "ddpm-features", preset="quick", labelled=K, feature_levels=LEVELS,
        diffusion=DiffusionPart(net="small", num_steps=100, max_level=20, train=TrainConfig(
            steps=ddpm_steps, batch_size=16, lr=3e-3, warmup_steps=10, ema_decay=None)),
        head=HeadPart(widths=(32,), train=TrainConfig(steps=200, batch_size=4, lr=3e-3,
                                                      warmup_steps=5, ema_decay=None)))


@pytest.fixture(scope="module")
def fitted(tmp_path_factory) -> anodiff.Detector:
    det = configured(ddpm_steps=100)
    det.run_dir = tmp_path_factory.mktemp("run")
    return det.fit(toy_items(64, seed=0))


def dice(det: anodiff.Detector, seed: int = 1) -> float:
    images, truth = squares_and_discs(16, seed)
    return Overlap.of(det.localize(images).mask.numpy(), truth.numpy()).dice


def test_k_labelled_slices_and_the_ddpm_features_find_the_shape(fitted) -> None:
    images, truth = squares_and_discs(16, seed=1)
    result = fitted.localize(images)
    bright = Overlap.of((images[:, 0] > 0.65).numpy(), truth.numpy()).dice
    assert dice(fitted) > 0.8 and dice(fitted) > bright + 0.1
    assert result.nfe == len(LEVELS) and result.pseudo_healthy is None
    assert 0 <= float(result.anomaly_map.min()) and float(result.anomaly_map.max()) <= 1


def test_the_features_come_from_what_the_ddpm_learned(fitted) -> None:
    """The same head trained on an untrained DDPM's features segments worse: the
    unlabelled pre-training is what the head reads."""
    untrained = configured(ddpm_steps=1).fit(toy_items(64, seed=0))
    assert dice(fitted) > dice(untrained) + 0.1


def test_exactly_k_masks_are_used_and_recorded(fitted) -> None:
    assert int(fitted.head_labelled) == K
    recorded = (fitted.run_dir / LABELLED_RECORD).read_text().splitlines()
    assert recorded[0] == "slice" and len(recorded) == K + 1
    assert len(set(recorded[1:])) == K
    items = toy_items(64, seed=0)
    assert all(bool(items[int(i)]["mask"].any()) for i in recorded[1:])


def test_another_k_retrains_only_the_head(fitted) -> None:
    fewer = fitted.retuned(keep_state=True, labelled=4)
    unet = {k: v.clone() for k, v in fitted.unet.state_dict().items()}
    fewer.refit(toy_items(64, seed=0))
    assert int(fewer.head_labelled) == 4
    assert all(torch.equal(v, fewer.unet.state_dict()[k]) for k, v in unet.items())
    with pytest.raises(anodiff.AnodiffError, match="stale"):
        fitted.retuned(labelled=4)


def test_bad_settings_and_data_are_named() -> None:
    with pytest.raises(anodiff.AnodiffError, match="labelled must be the number"):
        anodiff.create("ddpm-features", preset="quick", labelled=None)
    with pytest.raises(anodiff.AnodiffError, match="feature_levels"):
        anodiff.create("ddpm-features", preset="quick", feature_levels=(5, 500))
    det = anodiff.create("ddpm-features", preset="quick", labelled=100)
    with pytest.raises(anodiff.AnodiffError, match="only 8 items have a mask with a lesion"):
        det.fit(toy_items(8, seed=2))
    images, _ = squares_and_discs(4, seed=3)
    with pytest.raises(anodiff.AnodiffError, match="not a bare image array"):
        anodiff.create("ddpm-features", preset="quick").fit(images)
