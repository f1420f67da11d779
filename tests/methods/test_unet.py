"""The supervised UNet baseline: it learns what the masks mark, not what is bright."""

import pytest
import torch
from shape_toys import squares_and_discs

import anodiff
from anodiff.diffusion.training import TrainConfig
from anodiff.evaluation.metrics import Overlap
from anodiff.methods.training_data import segmentation_training_data


@pytest.fixture(scope="module")
def fitted() -> anodiff.Detector:
    images, masks = squares_and_discs(64, seed=0)
    det = anodiff.create("unet", preset="quick", channels=(8, 16, 32), train=TrainConfig(
        steps=300, batch_size=16, lr=3e-3, warmup_steps=10, ema_decay=None))
    return det.fit([{"image": x, "mask": m} for x, m in zip(images, masks, strict=True)])


def test_it_segments_the_shape_the_masks_mark_where_a_threshold_cannot(fitted) -> None:
    images, truth = squares_and_discs(16, seed=1)
    result = fitted.localize(images)
    ours = Overlap.of(result.mask.numpy(), truth.numpy()).dice
    bright = Overlap.of((images[:, 0] > 0.65).numpy(), truth.numpy()).dice
    assert bright < 0.75  # the disc is as bright as the square
    assert ours > 0.85 and ours > bright + 0.1
    assert result.nfe == 1 and result.pseudo_healthy is None
    assert 0 <= float(result.anomaly_map.min()) and float(result.anomaly_map.max()) <= 1


def test_the_mask_probability_changes_without_retraining(fitted) -> None:
    images, _ = squares_and_discs(4, seed=2)
    strict = fitted.retuned(probability=0.9).localize(images).mask
    assert strict.sum() <= fitted.localize(images).mask.sum()


def test_training_without_masks_is_a_named_error() -> None:
    images, masks = squares_and_discs(4, seed=3)
    det = anodiff.create("unet", preset="quick")
    with pytest.raises(anodiff.AnodiffError, match="not a bare image array"):
        det.fit(images)
    with pytest.raises(anodiff.AnodiffError, match="no training slice has a lesion pixel"):
        det.fit([{"image": x, "mask": torch.zeros_like(m)} for x, m in zip(images, masks,
                                                                           strict=True)])
    with pytest.raises(anodiff.AnodiffError, match="every item needs a 'mask'"):
        det.fit([{"image": x, "label": 1} for x in images])


def test_it_trains_on_the_train_split_masks_only(tmp_path) -> None:
    """The supervised regime takes every train slice with its mask and nothing else."""
    from anodiff.data import open_dataset
    from anodiff.data.synth import SynthConfig, build

    build(tmp_path, SynthConfig(size=32, cases=8, tracks=("tumour",)))
    data = open_dataset(tmp_path / "tumour", size=32)
    images, masks = segmentation_training_data("unet", data)
    train = data.split("train")
    assert len(images) == len(train) and torch.equal(masks, torch.as_tensor(train.masks))
    assert masks.any() and (~masks.flatten(1).any(1)).any()  # lesioned and healthy slices
