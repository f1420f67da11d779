"""The evaluation runner does not hold a split's pseudo-healthy images: each batch's become
per-slice residual sums as it comes, and only the grid's example slices are kept. The
figures must be those of the whole images (``healthy_residual`` from numpy directly)."""

import numpy as np
import pytest
import torch

from anodiff.evaluation.casewise import evaluate_predictions
from anodiff.evaluation.runner import (
    OutputArrays,
    example_rows,
    predict,
    predict_batch,
)
from anodiff.methods.results import AnomalyResult


class Smoother:
    """A reconstruction detector without a network: the pseudo-healthy image is each
    channel's 3 x 3 mean (an image-dependent residual, different on every slice)."""

    name = "smoother"

    def localize(self, images: torch.Tensor) -> AnomalyResult:
        healthy = torch.nn.functional.avg_pool2d(images, 3, stride=1, padding=1)
        residual = (images - healthy).abs().sum(1)
        return AnomalyResult(anomaly_map=residual, score=residual.flatten(1).amax(1), nfe=1.0,
                             pseudo_healthy=healthy)


def _slices(n: int = 23, seed: int = 0) -> list[dict]:
    """Two-channel 16 x 16 slices of three cases, a zero background around the brain and a
    bright square lesion on every third slice."""
    rng = np.random.default_rng(seed)
    items = []
    for i in range(n):
        image = np.zeros((2, 16, 16), np.float32)
        image[:, 2:-2, 2:-2] = rng.uniform(0.2, 0.6, (2, 12, 12))
        mask = np.zeros((16, 16), bool)
        if i % 3 == 0:
            size = 2 + i % 5
            mask[4:4 + size, 5:5 + size] = True
            image[:, mask] = 0.95
        items.append({"image": image, "mask": mask, "label": int(mask.any()),
                      "case": f"case{i // 8}", "index": i % 8})
    return items


def test_the_split_keeps_residual_sums_and_the_examples_not_the_pseudo_healthy_images(
) -> None:
    data = _slices()
    whole = predict(Smoother(), data, batch_size=5, progress=False)
    lean = predict(Smoother(), data, batch_size=5, progress=False, all_pseudo_healthy=False)
    assert whole.pseudo_healthy is not None and lean.pseudo_healthy is None
    np.testing.assert_array_equal(lean.maps, whole.maps)
    rows = example_rows(lean.truth, lean.foreground, lean.cases)
    assert sorted(lean.examples) == sorted(rows.tolist())  # only the grid's slices
    np.testing.assert_array_equal(np.stack([lean.examples[row] for row in rows.tolist()]),
                                  whole.pseudo_healthy[rows])
    fg = whole.foreground
    expected = [np.abs(whole.images[i] - whole.pseudo_healthy[i]).sum(0)[fg[i]].sum()
                for i in range(len(data))]
    np.testing.assert_allclose(lean.residual_sums, expected, rtol=1e-6)


def test_the_healthy_residual_is_that_of_the_whole_pseudo_healthy_images() -> None:
    test, validation = _slices(23, seed=0), [
        {**item, "mask": np.zeros((16, 16), bool), "label": 0} for item in _slices(9, seed=1)]
    lean = [predict(Smoother(), split, batch_size=4, progress=False, all_pseudo_healthy=False)
            for split in (test, validation)]
    whole = predict(Smoother(), test, batch_size=4, progress=False)
    metrics = evaluate_predictions(*lean, resamples=0)
    healthy = ~whole.labels
    residual = np.abs(whole.images - whole.pseudo_healthy).sum(1)
    reference = residual[healthy][whole.foreground[healthy]].astype(np.float64).mean()
    assert metrics["healthy_residual"] == pytest.approx(reference, rel=1e-6)
    other = evaluate_predictions(whole, lean[1], resamples=0)
    figures = [key for key, value in metrics.items()
               if isinstance(value, float) and key != "seconds_per_image"]
    assert len(figures) > 30
    assert [metrics[key] for key in figures] == pytest.approx([other[key] for key in figures],
                                                              nan_ok=True)


def test_batches_merged_in_any_order_give_the_same_predictions() -> None:
    data = _slices()
    inputs = np.stack([item["image"] for item in data])
    one = predict(Smoother(), data, batch_size=6, progress=False, all_pseudo_healthy=False)
    merged = OutputArrays(data, all_pseudo_healthy=False)
    for start in reversed(range(0, len(data), 6)):  # as shards may finish
        merged.put(start, predict_batch(Smoother(), inputs[start:start + 6], 2))
    other = merged.predictions()
    np.testing.assert_array_equal(other.residual_sums, one.residual_sums)
    assert sorted(other.examples) == sorted(one.examples)
    for row, image in one.examples.items():
        np.testing.assert_array_equal(other.examples[row], image)
