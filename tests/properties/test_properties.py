"""Property tests (Hypothesis): the IO round trip on random geometry, and the ranking and
overlap metrics against brute force on random inputs with ties."""

from __future__ import annotations

import math
import sys
import tempfile
from pathlib import Path

import nibabel as nib
import nrrd
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from anodiff.data.io import read_image, write_like
from anodiff.evaluation.metrics import Overlap, auroc, average_precision, best_dice

sys.path.insert(0, str(Path(__file__).parents[1] / "evaluation"))
from test_metrics import brute_ap, brute_auroc, brute_best_dice  # noqa: E402

SETTINGS = settings(max_examples=30, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


@st.composite
def affines(draw: st.DrawFn) -> np.ndarray:
    """Oblique voxel-to-world affines: a random rotation (unit quaternion), positive
    spacings from 0.2 to 5 mm, any origin."""
    q = np.array(draw(st.lists(st.floats(-1, 1), min_size=4, max_size=4)))
    if np.linalg.norm(q) < 0.1:
        q = np.array([1.0, 0.0, 0.0, 0.0])
    w, x, y, z = q / np.linalg.norm(q)
    rotation = np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])
    spacing = np.array(draw(st.lists(st.floats(0.2, 5.0), min_size=3, max_size=3)))
    affine = np.eye(4)
    affine[:3, :3] = rotation * spacing
    affine[:3, 3] = draw(st.lists(st.floats(-200, 200), min_size=3, max_size=3))
    return affine


volumes = st.tuples(st.integers(2, 9), st.integers(2, 9), st.integers(1, 6)).flatmap(
    lambda shape: arrays(np.float32, shape, elements=st.floats(-1e4, 1e4, width=32)))


def _reference(folder: Path, shape: tuple[int, ...], affine: np.ndarray, suffix: str) -> Path:
    """A zero image of ``shape`` and ``affine`` in the format of ``suffix``, written by its
    own library (nibabel, pynrrd in LPS space), not by anodiff."""
    zeros = np.zeros(shape, np.float32)
    if suffix == ".nrrd":
        lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine
        path = folder / "reference.nrrd"
        nrrd.write(str(path), zeros, {"space": "left-posterior-superior",
                                      "space directions": lps[:3, :3].T,
                                      "space origin": lps[:3, 3]})
        return path
    path = folder / f"reference{suffix}"
    nib.save(nib.Nifti1Image(zeros, affine), path)
    return path


@SETTINGS
@given(volume=volumes, affine=affines(), suffix=st.sampled_from([".nii.gz", ".nii", ".nrrd"]))
def test_write_like_then_read_keeps_array_and_affine(tmp_path: Path, volume: np.ndarray,
                                                     affine: np.ndarray, suffix: str) -> None:
    folder = Path(tempfile.mkdtemp(dir=tmp_path))
    reference = read_image(_reference(folder, volume.shape, affine, suffix))
    np.testing.assert_allclose(reference.affine, affine, rtol=1e-5, atol=1e-4)
    back = read_image(write_like(volume, reference, folder / f"map{suffix}"))
    np.testing.assert_array_equal(back.array, volume)
    np.testing.assert_allclose(back.affine, affine, rtol=1e-5, atol=1e-4)
    mask = volume > 0
    written = write_like(mask, reference, folder / f"mask{suffix}")
    np.testing.assert_array_equal(read_image(written).array, mask)


scores_and_labels = st.integers(2, 60).flatmap(lambda n: st.tuples(
    arrays(np.bool_, n),
    arrays(np.float64, n, elements=st.sampled_from([0.0, 0.1, 0.5, 0.9, 1.0, 2.5]))))


@SETTINGS
@given(case=scores_and_labels)
def test_ranking_metrics_equal_brute_force_with_ties(case: tuple[np.ndarray, np.ndarray]
                                                     ) -> None:
    labels, scores = case
    if 0 < labels.sum() < labels.size:
        assert auroc(labels, scores) == pytest.approx(brute_auroc(labels, scores), abs=1e-12)
    else:
        assert math.isnan(auroc(labels, scores))
    if labels.any():
        assert average_precision(labels, scores) == pytest.approx(brute_ap(labels, scores),
                                                                  abs=1e-12)
        assert best_dice(labels, scores).dice == pytest.approx(
            brute_best_dice(labels, scores), abs=1e-12)
    else:
        assert math.isnan(average_precision(labels, scores))


masks = st.integers(1, 40).flatmap(lambda n: st.tuples(arrays(np.bool_, n), arrays(np.bool_, n)))


@SETTINGS
@given(pair=masks)
def test_overlap_equals_counting(pair: tuple[np.ndarray, np.ndarray]) -> None:
    prediction, truth = pair
    tp = int(np.sum(prediction & truth))
    fp, fn = int(np.sum(prediction & ~truth)), int(np.sum(~prediction & truth))
    overlap = Overlap.of(prediction, truth)
    expected = 1.0 if tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn)
    assert overlap.dice == pytest.approx(expected)
    assert overlap.iou == pytest.approx(1.0 if tp + fp + fn == 0 else tp / (tp + fp + fn))
