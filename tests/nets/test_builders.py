import pytest
import torch

from anodiff.errors import AnodiffError
from anodiff.nets.builders import (
    NET_PRESETS,
    PooledHead,
    build_classifier,
    build_unet,
    count_parameters,
)


@pytest.mark.parametrize("preset", ["quick", "cpu"])
def test_unet_predicts_noise_of_the_image_shape(preset: str) -> None:
    net = build_unet(preset, 2, cond_channels=3, num_class_embeds=3)
    x = torch.randn(2, 5, 32, 32)
    out = net(x, timesteps=torch.tensor([0, 999]), class_labels=torch.tensor([0, 2]))
    assert out.shape == (2, 2, 32, 32)


def test_presets_grow_and_cpu_matches_the_calibrated_size() -> None:
    sizes = {name: count_parameters(build_unet(name, 1)) for name in ("quick", "cpu")}
    assert sizes["quick"] < 100_000
    assert 0.9e6 < sizes["cpu"] < 1.3e6  # the ~1.1 M-parameter net of the CPU calibration run
    assert NET_PRESETS["paper"].channels == (128, 128, 256, 256, 512, 512)


def test_classifier_returns_logits_per_class() -> None:
    clf = build_classifier("quick", 1, 2, (16, 16))
    logits = clf(torch.randn(3, 1, 16, 16), timesteps=torch.tensor([1, 2, 3]))
    assert logits.shape == (3, 2)


def test_classifier_pools_globally_so_its_size_does_not_grow_with_the_image() -> None:
    small = build_classifier("cpu", 3, 2, (32, 32))
    large = build_classifier("cpu", 3, 2, (96, 96))
    assert count_parameters(small) == count_parameters(large) < 400_000
    assert isinstance(small.out, PooledHead)


def test_pooled_head_reads_channels_last_features_in_channel_order() -> None:
    head = PooledHead(channels=8, norm_num_groups=4, num_classes=3)
    features = torch.randn(2, 8, 5, 5).to(memory_format=torch.channels_last)
    flat = features.reshape(2, -1)  # what DiffusionModelEncoder.forward hands its head
    expected = head.linear(torch.nn.functional.silu(head.norm(features)).mean((2, 3)))
    torch.testing.assert_close(head(flat), expected)


def test_three_dimensional_unet() -> None:
    net = build_unet("quick", 1, spatial_dims=3)
    out = net(torch.randn(1, 1, 8, 8, 8), timesteps=torch.tensor([5]))
    assert out.shape == (1, 1, 8, 8, 8)


def test_unknown_preset_and_bad_sizes_are_named() -> None:
    with pytest.raises(AnodiffError, match="unknown network preset 'huge'"):
        build_unet("huge", 1)
    with pytest.raises(AnodiffError, match="image_size"):
        build_classifier("quick", 1, 2, (16, 16, 16))
