"""Synthetic anomaly tasks: mask contract, shape sampler, Poisson blending, deformations,
Baugh's identity rate and folds, FNDM's free-form masks."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy import ndimage

from anodiff.data.anomalies import (
    ALL_TASKS,
    CORRUPTIONS,
    IDENTITY,
    TASKS,
    apply_task,
    corrupt_inside,
    draw_task_ids,
    fold_tasks,
    free_form_masks,
    mixed_gradient_blend,
    radial_offsets,
    random_task_corruption,
    sample_shape,
    sample_shape_masks,
    warp,
)
from anodiff.data.anomalies.shapes import side_limits
from anodiff.errors import AnodiffError

SIZE = 64


def _ellipse(size: int, centre: tuple[float, float], radii: tuple[float, float]) -> np.ndarray:
    rows, cols = np.indices((size, size), dtype=float)
    return ((rows - centre[0]) / radii[0]) ** 2 + ((cols - centre[1]) / radii[1]) ** 2 <= 1.0


def _brains(n: int, channels: int = 2, seed: int = 0) -> np.ndarray:
    """Brain-like slices: textured ellipses on a zero background; channel 2 inverts contrast."""
    rng = np.random.default_rng(seed)
    out = np.zeros((n, channels, SIZE, SIZE), dtype=np.float32)
    for i in range(n):
        texture = ndimage.gaussian_filter(rng.normal(size=(SIZE, SIZE)), 2.0)
        texture = (texture - texture.min()) / (texture.max() - texture.min())
        inside = _ellipse(SIZE, (32 + rng.uniform(-3, 3), 32), (27, 23))
        for c in range(channels):
            values = 0.2 + 0.7 * (texture if c % 2 == 0 else 1.0 - texture)
            out[i, c] = np.where(inside, values, 0.0)
    return out


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return _brains(6)


@pytest.fixture(scope="module")
def other_source() -> np.ndarray:
    """A single-channel, larger 'other dataset': fine random texture."""
    rng = np.random.default_rng(1)
    texture = ndimage.gaussian_filter(rng.random((3, 1, 80, 90)), (0, 0, 1.0, 1.0))
    return (texture - texture.min()) / (texture.max() - texture.min())


@pytest.mark.parametrize("task", ALL_TASKS)
def test_task_changes_only_inside_its_mask(
    task: str, images: np.ndarray, other_source: np.ndarray
) -> None:
    rng = np.random.default_rng(3)
    out, masks = apply_task(task, images, rng=rng, other_source=other_source)
    assert out.shape == images.shape and out.dtype == images.dtype
    assert masks.shape == (6, SIZE, SIZE) and masks.dtype == bool
    outside = np.broadcast_to(~masks[:, None], images.shape)
    assert np.array_equal(out[outside], images[outside])  # bit for bit
    assert out.min() >= 0.0 and out.max() <= 1.0
    for i in range(len(images)):
        assert masks[i].any(), f"image {i}: empty mask"
        changed = (out[i] != images[i]).any(axis=0)
        assert changed.any(), f"image {i}: nothing changed inside the mask"


@pytest.mark.parametrize("task", ALL_TASKS)
def test_tasks_are_seeded(task: str, images: np.ndarray, other_source: np.ndarray) -> None:
    def run(seed: int) -> tuple[np.ndarray, np.ndarray]:
        return apply_task(task, images, rng=np.random.default_rng(seed), other_source=other_source)

    first, again, other = run(7), run(7), run(8)
    assert np.array_equal(first[0], again[0]) and np.array_equal(first[1], again[1])
    assert not np.array_equal(first[1], other[1])


def test_shape_sampler_clips_sides_and_overlaps_the_foreground() -> None:
    rng = np.random.default_rng(0)
    for foreground in (
        _ellipse(SIZE, (32, 32), (31, 31)),  # large: the 6 % floor binds sometimes
        _ellipse(SIZE, (20, 40), (9, 14)),  # small: the 80 % ceiling binds often
    ):
        low, high = side_limits(foreground)
        sides = []
        for _ in range(150):
            shape, mask = sample_shape(foreground, rng)
            assert np.array_equal(mask, shape.rasterize(SIZE, SIZE))
            assert (mask & foreground).sum() >= 0.5 * mask.sum() > 0
            sides.append(shape.sides)
        sides = np.array(sides)
        assert (sides >= low - 1e-9).all() and (sides <= high + 1e-9).all()
        at_floor = np.isclose(sides, low).any(axis=1).mean()
        at_ceiling = np.isclose(sides, high).any(axis=1).mean()
        assert at_floor > 0 if foreground.sum() > 2000 else at_ceiling > 0.3


def test_shape_sampler_draws_one_to_four_anomalies() -> None:
    foreground = np.repeat(_ellipse(SIZE, (32, 32), (25, 20))[None], 60, axis=0)
    counts = [len(stack) for stack in sample_shape_masks(foreground, np.random.default_rng(1))]
    assert set(counts) == {1, 2, 3, 4}


def test_identity_rate_is_twenty_percent() -> None:
    n, p = 2000, 0.2
    ids = draw_task_ids(n, TASKS, rng=np.random.default_rng(0))
    tolerance = 4.0 * np.sqrt(n * p * (1 - p))  # 4 sigma of the binomial
    assert abs((ids == IDENTITY).sum() - n * p) < tolerance
    per_task = n * (1 - p) / len(TASKS)
    for task_id in range(len(TASKS)):
        assert abs((ids == task_id).sum() - per_task) < 4.0 * np.sqrt(per_task)


def test_random_task_corruption_leaves_identity_images_alone(
    images: np.ndarray, other_source: np.ndarray
) -> None:
    batch = np.concatenate([images, _brains(6, seed=1)])
    out, masks, ids = random_task_corruption(
        batch,
        TASKS,
        rng=np.random.default_rng(2),
        identity_probability=0.5,
        other_source=other_source,
    )
    assert (ids == IDENTITY).any() and (ids != IDENTITY).any()
    for i, task_id in enumerate(ids):
        if task_id == IDENTITY:
            assert not masks[i].any() and np.array_equal(out[i], batch[i])
        else:
            assert masks[i].any() and (out[i] != batch[i]).any()
            assert np.array_equal(out[i][:, ~masks[i]], batch[i][:, ~masks[i]])


def test_same_source_blend_inside_random_corruption_uses_the_whole_batch(
    images: np.ndarray,
) -> None:
    rng = np.random.default_rng(2)  # a seed that picks exactly one image for the task
    out, _, ids = random_task_corruption(
        images, ("same_source_blend",), rng=rng, identity_probability=0.8
    )
    chosen = np.flatnonzero(ids != IDENTITY)
    assert chosen.size == 1  # a batch of one for the task: the partner comes from the rest
    assert (out[chosen] != images[chosen]).any()


def test_folds_cover_every_three_of_five_combination() -> None:
    folds = fold_tasks()
    assert len(folds) == 10
    assert {fold.train for fold in folds} == set(itertools.combinations(TASKS, 3))
    held_out = [frozenset(fold.held_out) for fold in folds]
    assert set(held_out) == {frozenset(pair) for pair in itertools.combinations(TASKS, 2)}
    assert len(set(held_out)) == 10
    for fold in folds:
        assert set(fold.train) | set(fold.held_out) == set(TASKS)
        assert not set(fold.train) & set(fold.held_out)
    for task in TASKS:
        assert sum(task in fold.train for fold in folds) == 6
    with pytest.raises(AnodiffError):
        fold_tasks(5)


def _blend_case() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(5)
    target = ndimage.gaussian_filter(rng.random((2, 2, 40, 40)), (0, 0, 1.5, 1.5))
    source = rng.random((2, 2, 40, 40))  # rough: its gradients win on many edges, not all
    masks = np.stack([_ellipse(40, (20, 18), (9, 12)), _ellipse(40, (2, 30), (6, 8))])
    return target, source, masks  # the second region touches the image border


def test_poisson_blend_of_an_image_into_itself_is_the_identity() -> None:
    target, _, masks = _blend_case()
    assert np.allclose(mixed_gradient_blend(target, target, masks), target, atol=1e-10)
    flat = np.full_like(target, 0.5)  # mixed gradients keep the target where the source is flat
    assert np.allclose(mixed_gradient_blend(target, flat, masks), target, atol=1e-10)


def test_poisson_blend_solves_the_discrete_poisson_equation() -> None:
    target, source, masks = _blend_case()
    out = mixed_gradient_blend(target, source, masks)
    assert np.array_equal(out[:, :, ~masks[0]][0], target[:, :, ~masks[0]][0])
    assert np.abs(out - target).max() > 0.05
    _, _, height, width = target.shape
    worst = 0.0
    for i, y, x in zip(*np.nonzero(masks), strict=True):
        laplacian = np.zeros(target.shape[1])
        guidance = np.zeros(target.shape[1])
        for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1)):
            qy, qx = y + dy, x + dx
            if not (0 <= qy < height and 0 <= qx < width):
                continue
            laplacian += out[i, :, y, x] - out[i, :, qy, qx]
            g = source[i, :, y, x] - source[i, :, qy, qx]
            f = target[i, :, y, x] - target[i, :, qy, qx]
            guidance += np.where(np.abs(g) > np.abs(f), g, f)
        worst = max(worst, np.abs(laplacian - guidance).max())
    assert worst < 1e-9


def test_poisson_blend_rejects_a_region_without_boundary() -> None:
    target, source, _ = _blend_case()
    with pytest.raises(AnodiffError, match="whole image"):
        mixed_gradient_blend(target, source, np.ones((2, 40, 40), dtype=bool))


def _ring(radius: float) -> np.ndarray:
    rows, cols = np.indices((SIZE, SIZE), dtype=float)
    distance = np.hypot(rows - 32, cols - 32)
    return np.exp(-0.5 * ((distance - radius) / 1.5) ** 2)[None, None]


def _ring_radius(image: np.ndarray) -> float:
    rows, cols = np.indices((SIZE, SIZE), dtype=float)
    weight = image[0, 0]
    return float((weight * np.hypot(rows - 32, cols - 32)).sum() / weight.sum())


@pytest.mark.parametrize(("sink", "sign"), [(True, -1.0), (False, 1.0)])
def test_sink_shrinks_and_source_grows_a_ring(sink: bool, sign: float) -> None:
    ring, mask = _ring(12.0), _ellipse(SIZE, (32, 32), (22, 22))
    offsets = radial_offsets(mask, (32.0, 32.0), 3.0, sink=sink)
    moved = warp(ring, offsets[None])
    assert sign * (_ring_radius(moved) - _ring_radius(ring)) > 1.0


def test_displacement_vanishes_on_the_mask_boundary_and_never_folds() -> None:
    rng = np.random.default_rng(6)
    foreground = _ellipse(SIZE, (32, 32), (30, 26))
    masks = [_ellipse(SIZE, (32, 32), (22, 22)), _ellipse(SIZE, (3, 40), (8, 12))]  # at border
    masks += [sample_shape(foreground, rng)[1] for _ in range(6)]
    cross = ndimage.generate_binary_structure(2, 1)
    for mask, sink in itertools.product(masks, (True, False)):
        rows, cols = np.nonzero(ndimage.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1] > 2)
        centre = (float(rows.mean()), float(cols.mean())) if rows.size else (32.0, 32.0)
        offsets = radial_offsets(mask, centre, 10.0, sink=sink)  # a large push: capped
        boundary = mask & ~ndimage.binary_erosion(mask, cross, border_value=0)
        assert not offsets[:, ~mask].any() and not offsets[:, boundary].any()
        assert np.hypot(*offsets).max() <= 10.0 + 1e-9
        mapped = np.indices(mask.shape, dtype=float) + offsets
        d_row, d_col = np.gradient(mapped[0]), np.gradient(mapped[1])
        jacobian = d_row[0] * d_col[1] - d_row[1] * d_col[0]
        assert jacobian.min() > 0.0


def test_free_form_masks_have_plausible_coverage_and_vary() -> None:
    masks = free_form_masks(200, SIZE, SIZE, rng=np.random.default_rng(0))
    coverage = masks.mean(axis=(1, 2))
    assert 0.08 < coverage.mean() < 0.25  # about 0.15 at 64^2 (Yu et al.'s settings)
    assert coverage.min() > 0.0 and coverage.std() > 0.03
    assert len({mask.tobytes() for mask in masks}) == 200
    overlap = (masks[:-1] & masks[1:]).sum(axis=(1, 2))
    union = (masks[:-1] | masks[1:]).sum(axis=(1, 2))
    assert (overlap / union).mean() < 0.3  # consecutive masks barely overlap
    again = free_form_masks(200, SIZE, SIZE, rng=np.random.default_rng(0))
    assert np.array_equal(masks, again)


@pytest.mark.parametrize("mode", CORRUPTIONS)
def test_corrupt_inside_changes_exactly_the_masked_region(mode: str, images: np.ndarray) -> None:
    masks = free_form_masks(len(images), SIZE, SIZE, rng=np.random.default_rng(1))
    out = corrupt_inside(images, masks, rng=np.random.default_rng(2), mode=mode)
    outside = np.broadcast_to(~masks[:, None], images.shape)
    assert np.array_equal(out[outside], images[outside])
    assert out.min() >= 0.0 and out.max() <= 1.0
    for i in range(len(images)):
        assert (out[i] != images[i]).any()


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda x, r: apply_task("nope", x, rng=r), "unknown task"),
        (lambda x, r: apply_task("other_source_blend", x, rng=r), "other_source"),
        (lambda x, r: apply_task("same_source_blend", x[:1], rng=r), "at least 2"),
        (lambda x, r: apply_task("intensity_change", x * 2.0, rng=r), r"\[0, 1\]"),
        (lambda x, r: apply_task("intensity_change", x[0], rng=r), r"\(N, C, H, W\)"),
        (lambda x, r: apply_task("intensity_change", x, rng=0), "Generator"),
        (lambda x, r: apply_task("intensity_change", np.zeros_like(x), rng=r), "foreground"),
        (lambda x, r: random_task_corruption(x, ("sink", "x"), rng=r), "unknown task"),
        (lambda x, r: corrupt_inside(x, x[:, 0] > 0, rng=r, mode="paint"), "unknown mode"),
    ],
)
def test_bad_arguments_raise_anodiff_error(call, message: str, images: np.ndarray) -> None:
    with pytest.raises(AnodiffError, match=message):
        call(images, np.random.default_rng(0))
