"""pDDPM: patch-noised training, the test grid, and a trained model that repairs what an
untrained one cannot.

One quick model (16² toy brains, 80 training steps) is trained once per module. The
conformance suite covers fitting, saving, NFE counting and bad input for ``pddpm``.
"""


import pytest
import torch
from test_anoddpm import SIZE, fit_on_toy_brains, toy_brains
from torch import nn

import anodiff
from anodiff.diffusion.objectives import DiffusionObjective, random_boxes
from anodiff.diffusion.schedule import NoiseSchedule
from anodiff.errors import AnodiffError
from anodiff.methods.parts import DiffusionPart
from anodiff.methods.pddpm import PDDPM, box_starts, grid_boxes
from anodiff.scoring.foreground import foreground

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> PDDPM:
    return fit_on_toy_brains("pddpm", tmp_path_factory.mktemp("pddpm"))


def test_box_grid_covers_the_image() -> None:
    assert box_starts(64, 32, 32) == [0, 32]
    assert box_starts(10, 4, 4) == [0, 4, 6]  # the last box flush with the border
    assert box_starts(8, 8, 3) == [0]
    boxes = grid_boxes(10, 12, 4, 4)
    assert boxes.shape == (9, 10, 12) and boxes.any(0).all()
    assert all(int(b.sum()) == 16 for b in boxes)
    assert grid_boxes(64, 64, 32, 16).shape[0] == 9  # overlapping boxes every 16 px


def test_random_boxes_are_one_square_per_image() -> None:
    boxes = random_boxes((50, 3, 12, 10), 4, torch.Generator().manual_seed(0))
    assert boxes.shape == (50, 1, 12, 10) and boxes.dtype == torch.bool
    assert (boxes.flatten(1).sum(1) == 16).all()
    rows, cols = boxes[:, 0].any(2), boxes[:, 0].any(1)
    assert (rows.sum(1) == 4).all() and (cols.sum(1) == 4).all()  # a square, not scattered
    assert len({tuple(b.nonzero()[0].tolist()) for b in boxes}) > 10  # positions vary
    again = random_boxes((50, 3, 12, 10), 4, torch.Generator().manual_seed(0))
    assert torch.equal(boxes, again)
    with pytest.raises(AnodiffError, match="patch side"):
        random_boxes((1, 1, 8, 8), 9, torch.Generator())


class Spy(nn.Module):
    """Returns a fixed output and remembers the noisy input it was given."""

    def __init__(self, output: torch.Tensor) -> None:
        super().__init__()
        self.output = output

    def forward(self, x, timesteps, class_labels=None):
        self.seen = x
        return self.output


def test_patch_objective_noises_and_scores_the_box_only() -> None:
    x0 = torch.rand(6, 2, 8, 8) * 2 - 1
    objective = DiffusionObjective(NoiseSchedule.create("linear", 100), prediction="x0",
                                   loss="l1", patch=3)
    wrong_outside = x0 + 5.0
    spy = Spy(wrong_outside)
    generator = torch.Generator().manual_seed(1)
    loss = objective(spy, {"image": x0}, generator)
    kept = (spy.seen == x0).all(1)  # (N, H, W): pixels passed through clean
    assert ((~kept).flatten(1).sum(1) == 9).all()  # exactly the 3 x 3 box was noised
    assert torch.isclose(loss, torch.tensor(5.0))
    inside = torch.where(kept[:, None], wrong_outside, x0)  # right in the box only
    assert objective(Spy(inside), {"image": x0}, torch.Generator().manual_seed(1)) == 0


@pytest.mark.slow  # trains a model; the conformance suite covers the contract by default
def test_trained_model_repairs_the_lesion_from_context(trained: PDDPM) -> None:
    images, truth = toy_brains(8, True, seed=1)
    raw = trained.step(images, torch.Generator().manual_seed(0))
    assert raw.nfe == 4  # 8-px boxes on 16² slices
    healthy_tissue = foreground(images) & ~truth
    assert raw.anomaly_map[truth].mean() > 2 * raw.anomaly_map[healthy_tissue].mean()
    untrained = PDDPM(trained.config)
    untrained.prepare(trained.input_shape)
    blind = untrained.step(images, torch.Generator().manual_seed(0))
    error = (images - raw.pseudo_healthy).abs().mean()  # the whole slice: disc, core, background
    assert error < 0.5 * (images - blind.pseudo_healthy).abs().mean()


@pytest.mark.slow  # trains a model; the conformance suite covers the contract by default
def test_all_boxes_are_batched_and_seeded(trained: PDDPM) -> None:
    images, _ = toy_brains(5, True, seed=2)
    one = trained.step(images, torch.Generator().manual_seed(3))
    chunked = trained.retuned(keep_state=True, batch_size=3).step(
        images, torch.Generator().manual_seed(3))
    torch.testing.assert_close(one.anomaly_map, chunked.anomaly_map, atol=1e-5, rtol=0)
    other = trained.step(images, torch.Generator().manual_seed(4))
    assert not torch.equal(one.anomaly_map, other.anomaly_map)
    overlapping = trained.retuned(keep_state=True, stride=4).step(
        images, torch.Generator().manual_seed(3))
    assert overlapping.nfe == 9 and torch.isfinite(overlapping.anomaly_map).all()


def test_bad_settings_are_refused() -> None:
    with pytest.raises(AnodiffError, match="prediction must be x0"):
        anodiff.create("pddpm", preset="quick",
                       diffusion=DiffusionPart(net="quick", num_steps=100, prediction="eps"))
    with pytest.raises(AnodiffError, match="level"):
        anodiff.create("pddpm", preset="quick", level=500)  # T = 100
    with pytest.raises(AnodiffError, match="patch must be"):
        anodiff.create("pddpm", preset="quick", patch=0)
    with pytest.raises(AnodiffError, match="larger than the image side"):
        anodiff.create("pddpm", preset="quick", patch=SIZE + 1).fit(
            toy_brains(4, False, seed=0)[0])
