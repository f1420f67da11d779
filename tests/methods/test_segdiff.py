"""segdiff: masks sampled from noise by a diffusion model conditioned on the image.

The toy (``shape_toys``) puts a lesion square and a non-lesion disc of the same brightness
in every slice, so an intensity threshold cannot tell them apart; a sampled mask can only
find the square if the denoiser learned the masks *given the image* and the sampler carries
that from pure noise to a mask.
"""

import pytest
import torch
from shape_toys import squares_and_discs

import anodiff
from anodiff.diffusion.training import TrainConfig
from anodiff.evaluation.metrics import Overlap
from anodiff.evaluation.protocol import uncertainty_auroc
from anodiff.methods.parts import DiffusionPart
from anodiff.scoring.foreground import foreground

STEPS, SAMPLES = 5, 3


@pytest.fixture(scope="module")
def fitted() -> anodiff.Detector:
    images, masks = squares_and_discs(64, seed=0)
    det = anodiff.create("segdiff", preset="quick", steps=STEPS, samples=SAMPLES,
                         diffusion=DiffusionPart(
                             net="small", num_steps=100, prediction="x0", train=TrainConfig(
                                 steps=100, batch_size=16, lr=3e-3, warmup_steps=10,
                                 ema_decay=None)))
    return det.fit([{"image": x, "mask": m} for x, m in zip(images, masks, strict=True)])


def test_sampled_masks_mark_the_shape_a_threshold_cannot_tell(fitted) -> None:
    images, truth = squares_and_discs(16, seed=1)
    result = fitted.localize(images)
    ours = Overlap.of(result.mask.numpy(), truth.numpy()).dice
    bright = Overlap.of((images[:, 0] > 0.65).numpy(), truth.numpy()).dice
    assert bright < 0.75  # the disc is as bright as the square
    assert ours > 0.8 and ours > bright + 0.1
    assert result.nfe == STEPS * SAMPLES and result.pseudo_healthy is None
    assert 0 <= float(result.anomaly_map.min()) and float(result.anomaly_map.max()) <= 1


def test_each_draw_is_a_mask_and_their_spread_marks_the_wrong_pixels(fitted) -> None:
    """One draw is near-binary (a sampled mask, not a probability); on noisy slices, where
    the ensemble's mask makes mistakes, its spread is higher where the mask is wrong than
    where it is right (Wolleb 2022c). On clean toy slices it makes none."""
    images, truth = squares_and_discs(16, seed=2)
    fg = foreground(images)
    one = fitted.retuned(samples=1).localize(images)
    assert one.uncertainty is None
    draw = one.anomaly_map[fg]
    assert float(((draw < 0.2) | (draw > 0.8)).float().mean()) > 0.95
    noise = 0.3 * torch.randn(images.shape, generator=torch.Generator().manual_seed(0))
    result = fitted.localize((images + noise).clamp(0, 1))
    assert result.uncertainty is not None and result.uncertainty.shape == truth.shape
    wrong = (result.mask != truth) & fg
    assert 0 < int(wrong.sum()) < int(truth.sum())
    assert uncertainty_auroc(result.uncertainty.numpy(), result.mask.numpy(), truth.numpy(),
                             fg.numpy()) > 0.8


def test_the_mask_follows_the_image_not_the_noise(fitted) -> None:
    """Another seed draws other noise but finds the same squares; an image without a
    square gets (almost) no mask."""
    images, truth = squares_and_discs(8, seed=3)
    other = fitted.retuned(seed=1).localize(images)
    assert not torch.equal(other.anomaly_map, fitted.localize(images).anomaly_map)
    assert Overlap.of(other.mask.numpy(), truth.numpy()).dice > 0.8
    blank = images.clone()
    blank[truth[:, None]] = 0.4  # the square painted over with background
    assert fitted.localize(blank).mask.float().mean() < 0.005


def test_settings_that_cannot_work_are_named() -> None:
    with pytest.raises(anodiff.AnodiffError, match="every level"):
        anodiff.create("segdiff", preset="quick",
                       diffusion=DiffusionPart(net="quick", num_steps=100, max_level=50))
    with pytest.raises(anodiff.AnodiffError, match="probability"):
        anodiff.create("segdiff", preset="quick", probability=1.0)
    images, masks = squares_and_discs(4, seed=4)
    with pytest.raises(anodiff.AnodiffError, match="not a bare image array"):
        anodiff.create("segdiff", preset="quick").fit(images)
