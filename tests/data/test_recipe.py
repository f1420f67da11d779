"""InputRecipe: raw intensities made into model inputs as the training slices were."""

import numpy as np
import pytest
import torch
from PIL import Image as PILImage

from anodiff.data import open_dataset
from anodiff.data.normalise import fit_to_size, normalise_intensity
from anodiff.data.recipe import InputRecipe, raw_batch
from anodiff.errors import AnodiffError


def test_per_image_recipe_matches_the_images_layout(tmp_path) -> None:
    """An images dataset records a per-image recipe; applying it to the raw images gives
    the dataset's own slices."""
    rng = np.random.default_rng(0)
    (tmp_path / "images").mkdir()
    raw = [rng.integers(10, 250, (20, 30)).astype(np.uint8) for _ in range(3)]
    for i, image in enumerate(raw):
        PILImage.fromarray(image).save(tmp_path / "images" / f"im{i}.png")
    (tmp_path / "labels.csv").write_text("id,label,split\nim0,0,train\nim1,0,train\n"
                                         "im2,0,val\n")
    data = open_dataset(tmp_path, size=16, fit="pad")
    recipe = InputRecipe.of(data)
    assert recipe is not None and not recipe.per_volume and recipe.fit == "pad"
    made = recipe.apply(np.stack(raw)[:, None].astype(np.float32))
    np.testing.assert_allclose(made, data.images, atol=1e-6)
    assert InputRecipe.from_dict(recipe.to_dict()) == recipe


def test_per_volume_recipe_uses_every_slice_of_each_channel() -> None:
    recipe = InputRecipe("max", {}, 8, "resize", True, ("flair", "t1"))
    raw = np.random.default_rng(1).uniform(1, 100, (5, 2, 8, 8)).astype(np.float32)
    raw[3, 1, 4, 4] = 400.0  # the volume maximum of channel 1, in one slice
    made = recipe.apply(raw)
    np.testing.assert_allclose(made[:, 1], normalise_intensity(raw[:, 1], "max"))
    assert made[0, 1].max() < 0.26 and made[0, 0].max() > 0.9  # per channel, per volume
    np.testing.assert_allclose(fit_to_size(made, 8, "resize"), made)


@pytest.mark.parametrize(("shape", "channels", "expected"), [
    ((6, 7), 1, (1, 1, 6, 7)), ((4, 6, 7), 1, (4, 1, 6, 7)), ((2, 6, 7), 2, (1, 2, 6, 7)),
    ((3, 2, 6, 7), 2, (3, 2, 6, 7)),
])
def test_raw_batch_takes_slices_stacks_and_batches(shape, channels, expected) -> None:
    assert raw_batch("m", torch.ones(shape), channels).shape == expected


@pytest.mark.parametrize(("images", "channels", "message"), [
    (np.ones((6, 7)), 2, r"expected raw images \(2, H, W\)"),
    (np.ones((3, 6, 7)), 2, r"got shape \(3, 6, 7\)"),
    (np.ones((0, 1, 6, 7)), 1, "no images"),
    (np.full((1, 1, 6, 7), np.nan), 1, "NaN"),
    ("scan.nii.gz", 1, "numeric array"),
])
def test_raw_batch_names_what_it_cannot_use(images, channels, message) -> None:
    with pytest.raises(AnodiffError, match=message):
        raw_batch("m", images, channels)


def test_a_2_5_d_recipe_gives_raw_slices_their_neighbours(tmp_path) -> None:
    """A recipe recorded with context makes the neighbours from the raw slices given
    (one volume's, inferior -> superior), as the dataset made them from the volume."""
    recipe = InputRecipe("max", {}, 8, "resize", True,
                         ("flair", "t1", "flair@-1", "t1@-1", "flair@+1", "t1@+1"), 1)
    assert recipe.raw_channels == 2
    raw = np.random.default_rng(2).uniform(1, 100, (5, 2, 8, 8)).astype(np.float32)
    made = recipe.apply(raw)
    centre = InputRecipe("max", {}, 8, "resize", True, ("flair", "t1")).apply(raw)
    assert made.shape == (5, 6, 8, 8)
    np.testing.assert_array_equal(made[:, :2], centre)
    np.testing.assert_array_equal(made[1:, 2:4], centre[:-1])
    np.testing.assert_array_equal(made[:-1, 4:6], centre[1:])
    assert InputRecipe.from_dict(recipe.to_dict()) == recipe
    flat = InputRecipe("max", {}, 8, "resize", True, ("flair", "t1"))
    assert "context" not in flat.to_dict()  # 2-D models stay readable by earlier versions
    assert InputRecipe.from_dict(flat.to_dict()) == flat
