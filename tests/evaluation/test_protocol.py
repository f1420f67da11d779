import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from anodiff.errors import AnodiffError
from anodiff.evaluation import evaluate
from anodiff.scoring.postprocess import PostProcess

KEYS = {"image_auroc", "image_ap", "image_f1", "pixel_auroc", "pixel_ap", "dice_max",
        "dice_otsu", "precision_otsu", "hd95_otsu", "vs_otsu", "healthy_residual",
        "seconds_per_image", "nfe_per_image", "n_images"}


def _test_set(n: int = 20, size: int = 24, seed: int = 0):
    rng = np.random.default_rng(seed)
    truth = np.zeros((n, size, size), bool)
    for i in range(n // 2):  # half the slices carry one square lesion
        r, c = rng.integers(3, size - 9, 2)
        truth[i, r:r + 6, c:c + 6] = True
    fg = np.zeros_like(truth)
    fg[:, 1:-1, 1:-1] = True
    return truth, fg, rng


def test_a_perfect_map_scores_perfectly() -> None:
    truth, fg, rng = _test_set()
    maps = truth.astype(np.float32)
    scores = maps.reshape(len(maps), -1).max(1) + 0.01 * rng.random(len(maps))
    images = rng.random((20, 1, 24, 24))
    res = evaluate(maps, truth, scores, foreground=fg, images=images,
                   pseudo_healthy=images + 0.1, image_threshold=0.5, pixel_threshold=0.5,
                   case_ids=["a"] * 10 + ["b"] * 10, seconds_per_image=0.2, nfe_per_image=20)
    assert KEYS <= set(res)
    for key in ("image_auroc", "image_ap", "image_f1", "pixel_auroc", "pixel_ap", "dice_max",
                "dice_otsu", "precision_otsu", "vs_otsu", "dice_fpr", "volume_dice_otsu",
                "dice_global_otsu",
                "lesion_detection_rate"):
        assert res[key] == pytest.approx(1.0), key
    assert res["hd95_otsu"] == 0.0 and res["healthy_fp_area"] == 0.0
    assert res["lesion_false_positives_per_image"] == 0.0
    assert res["healthy_residual"] == pytest.approx(0.1)
    assert res["n_images"] == 20 and res["n_anomalous"] == 10 and res["nfe_per_image"] == 20


def test_a_random_map_scores_at_chance() -> None:
    truth, fg, rng = _test_set(n=200, seed=1)
    maps = rng.random(truth.shape)
    res = evaluate(maps, truth, rng.random(200), foreground=fg)
    assert res["pixel_auroc"] == pytest.approx(0.5, abs=0.02)
    assert res["image_auroc"] == pytest.approx(0.5, abs=0.1)
    lesion_share = truth[:100][fg[:100]].mean()
    assert res["pixel_ap"] == pytest.approx(lesion_share, abs=0.01)
    assert math.isnan(res["image_f1"]) and math.isnan(res["healthy_residual"])
    assert res["dice_otsu"] < 0.2


def test_the_methods_own_mask_and_postprocessing_are_used() -> None:
    truth, fg, rng = _test_set()
    maps = rng.random(truth.shape)
    res = evaluate(maps, truth, rng.random(20), foreground=fg, predicted=truth.copy(),
                   postprocess=PostProcess(min_component_size=2))
    assert res["dice_own"] == 1.0 and res["dice_otsu"] < 0.5
    assert res["postprocess"]["min_component_size"] == 2


def test_the_own_mask_is_scored_per_case() -> None:
    """``volume_dice_own``: each lesioned case's 3-D Dice at the method's own mask."""
    truth, ids = _volumes()
    predicted = np.zeros_like(truth)
    predicted[0:3, 1:4, 1:4] = True  # case a: its big lesion, not its 1-voxel one
    res = evaluate(truth.astype(np.float32), truth, truth.reshape(18, -1).any(1),
                   predicted=predicted, case_ids=ids)
    assert res["volume_dice_own"] == pytest.approx((2 * 27 / (27 + 28) + 0.0) / 2)
    # lesion-wise at the own mask, as at the FPR threshold: a's big lesion of three found
    assert res["lesion_recall_own"] == pytest.approx(1 / 3)
    assert res["lesion_precision_own"] == 1.0


def test_the_uncertainty_is_scored_by_how_well_it_marks_wrong_pixels() -> None:
    """``uncertainty_auroc_<rule>`` is scikit-learn's AUROC of the uncertainty for "this
    rule's mask is wrong here" over the foreground, for each mask rule."""
    truth, fg, rng = _test_set(seed=3)
    maps = np.clip(truth + 0.6 * rng.standard_normal(truth.shape), 0, 1)
    predicted = maps > 0.5
    uncertainty = rng.random(truth.shape) + 0.5 * (predicted != truth)
    res = evaluate(maps, truth, rng.random(20), foreground=fg, predicted=predicted,
                   uncertainty=uncertainty, pixel_threshold=0.7)
    for rule, masks in (("own", predicted), ("fpr", (maps >= 0.7) & fg)):
        expected = roc_auc_score((masks != truth)[fg], uncertainty[fg])
        assert res[f"uncertainty_auroc_{rule}"] == pytest.approx(expected)
    # the uncertainty was made from the own mask's errors: P(U + 0.5 > U') = 0.875
    assert res["uncertainty_auroc_own"] == pytest.approx(0.875, abs=0.03)
    assert res["uncertainty_auroc_own"] > res["uncertainty_auroc_fpr"]
    assert 0 <= res["uncertainty_auroc_otsu"] <= 1
    assert not any(key.startswith("uncertainty") for key in evaluate(maps, truth,
                                                                     rng.random(20)))


def test_the_foreground_area_reference_is_the_auroc_of_slice_size() -> None:
    truth, fg, rng = _test_set(n=40, seed=2)
    area = rng.random(40)
    for i, share in enumerate(area):  # foreground share of slice i grows with area[i]
        fg[i] = False
        side = 4 + int(share * 18)
        fg[i, :side, :side] = True
        truth[i] &= fg[i]
    labels = truth.reshape(40, -1).any(1)
    res = evaluate(rng.random(truth.shape), truth, rng.random(40), foreground=fg)
    expected = roc_auc_score(labels, fg.reshape(40, -1).mean(1))
    assert res["image_auroc_foreground_area"] == pytest.approx(expected)
    big_sick = fg.copy()
    big_sick[labels] = True  # diseased slices all foreground: the reference separates them
    assert evaluate(rng.random(truth.shape), truth, rng.random(40),
                    foreground=big_sick)["image_auroc_foreground_area"] == pytest.approx(1.0)
    assert math.isnan(evaluate(rng.random(truth.shape), truth,
                               rng.random(40))["image_auroc_foreground_area"])


def _volumes():
    """Three 3-D cases of 6 slices (8 x 8): case a has a big lesion (27 voxels) and a small
    one (1 voxel), case b one lesion of 8 voxels, case c none."""
    truth = np.zeros((18, 8, 8), bool)
    truth[0:3, 1:4, 1:4] = True  # a: 27 voxels
    truth[4, 6, 6] = True  # a: 1 voxel
    truth[7:9, 2:4, 2:4] = True  # b: 8 voxels
    ids = ["a"] * 6 + ["b"] * 6 + ["c"] * 6
    return truth, ids


def test_the_operating_point_is_measured_per_case_and_per_lesion() -> None:
    truth, ids = _volumes()
    maps = np.zeros(truth.shape, np.float32)
    maps[0:3, 1:4, 1:4] = 1.0  # finds a's big lesion exactly
    maps[14, 5, 5] = 1.0  # a false positive in the healthy case c
    res = evaluate(maps, truth, maps.reshape(18, -1).max(1), pixel_threshold=0.5,
                   case_ids=ids, voxel_ml={"a": 0.1, "b": 0.1, "c": 0.1},
                   size_bins_ml=(1.0, 2.0))
    assert res["volume_dice_fpr"] == pytest.approx((2 * 27 / (2 * 27 + 1) + 0.0) / 2)
    assert res["lesion_recall_fpr"] == pytest.approx(1 / 3)  # 1 of 3 lesions found
    assert res["lesion_precision_fpr"] == pytest.approx(1 / 2)  # 1 of 2 flagged blobs hits
    assert res["lesion_f1_fpr"] == pytest.approx(2 * (1 / 2) * (1 / 3) / (1 / 2 + 1 / 3))
    # volumes: 0.1 ml (small), 0.8 ml (small), 2.7 ml (large)
    assert (res["n_lesions_small"], res["n_lesions_medium"], res["n_lesions_large"]) == (2, 0, 1)
    assert res["detection_rate_small_fpr"] == 0.0 and res["detection_rate_large_fpr"] == 1.0
    assert math.isnan(res["detection_rate_medium_fpr"])
    assert res["healthy_fp_area_fpr"] == pytest.approx(1 / 64 / 12)  # one pixel, 12 slices


def test_case_auroc_ranks_cases_by_their_flagged_brain_share() -> None:
    """Six cases of 4 slices, three with a lesion; the case score is the share of the
    case's foreground above the threshold, compared with scikit-learn's AUROC."""
    rng = np.random.default_rng(4)
    ids = np.repeat(list("abcdef"), 4)
    truth = np.zeros((24, 6, 6), bool)
    for first in (0, 4, 8):  # a, b, c
        truth[first + 1, 2:4, 2:4] = True
    maps = rng.random((24, 6, 6)).astype(np.float32)
    fg = np.ones_like(truth)
    fg[:, 0] = False
    res = evaluate(maps, truth, maps.reshape(24, -1).max(1), foreground=fg,
                   pixel_threshold=0.8, case_ids=ids.tolist())
    shares = [((maps[ids == c] > 0.8) & fg[ids == c]).sum() / fg[ids == c].sum()
              for c in "abcdef"]
    assert res["case_auroc_fpr"] == pytest.approx(roc_auc_score([1, 1, 1, 0, 0, 0], shares))
    assert res["n_healthy_cases"] == 3
    only_lesioned = evaluate(maps[:12], truth[:12], maps[:12].reshape(12, -1).max(1),
                             pixel_threshold=0.8, case_ids=ids[:12].tolist())
    assert math.isnan(only_lesioned["case_auroc_fpr"])


def test_hd95_is_in_mm_where_the_pixel_size_is_known() -> None:
    """The same masks on pixels of 2 x 2 mm: HD95 doubles, and the unit says so; without a
    size for every case it stays on the pixel grid."""
    truth, ids = _volumes()
    maps = np.zeros(truth.shape, np.float32)
    maps[0:3, 1:5, 1:4] = 1.0  # one column too wide: HD95 of 1 pixel on those slices
    kwargs = {"pixel_threshold": 0.5, "case_ids": ids}
    pixels = evaluate(maps, truth, maps.reshape(18, -1).max(1), **kwargs)
    mm = evaluate(maps, truth, maps.reshape(18, -1).max(1), **kwargs,
                  pixel_mm={"a": (2.0, 2.0), "b": (2.0, 2.0), "c": (2.0, 2.0)})
    partly = evaluate(maps, truth, maps.reshape(18, -1).max(1), **kwargs,
                      pixel_mm={"a": (2.0, 2.0)})
    assert pixels["hd95_unit"] == partly["hd95_unit"] == "pixel" and mm["hd95_unit"] == "mm"
    assert mm["hd95_fpr"] == pytest.approx(2 * pixels["hd95_fpr"]) and pixels["hd95_fpr"] > 0
    assert partly["hd95_fpr"] == pixels["hd95_fpr"]
    assert mm["case_dice_fpr"] == pytest.approx({"a": 2 * 27 / (27 + 36 + 1), "b": 0.0})


def test_3d_postprocessing_works_across_slices() -> None:
    truth, ids = _volumes()
    maps = np.zeros(truth.shape, np.float32)
    maps[0:3, 1:4, 1:4] = 1.0
    maps[4, 6, 6] = 1.0  # a one-slice spike: an inter-slice median removes it
    smoothed = PostProcess(interslice_median=3).maps(maps, np.ones_like(truth), ids)
    assert smoothed[4, 6, 6] == 0 and smoothed[1, 2, 2] == 1
    masks = maps > 0.5
    kept = PostProcess(min_lesion_ml=0.5).masks(masks, ids, {"a": 0.1, "b": 0.1, "c": 0.1})
    assert kept[0:3, 1:4, 1:4].all() and not kept[4, 6, 6]  # 2.7 ml kept, 0.1 ml dropped
    eroded = PostProcess(erode_brain=1).maps(np.ones((1, 8, 8), np.float32),
                                             np.ones((1, 8, 8), bool))
    assert eroded[0, 0].sum() == 0 and eroded[0, 4, 4] == 1
    with pytest.raises(AnodiffError, match="needs each slice's case"):
        PostProcess(interslice_median=3).maps(maps, None)
    with pytest.raises(AnodiffError, match="voxel size"):
        PostProcess(min_lesion_ml=0.5).masks(masks, ids, {})
    with pytest.raises(AnodiffError, match="interslice_median"):
        PostProcess(interslice_median=2)


def test_intervals_come_with_the_metrics_when_asked() -> None:
    truth, fg, rng = _test_set()
    maps = truth + 0.5 * rng.random(truth.shape)
    ids = [f"case{i // 2}" for i in range(20)]
    res = evaluate(maps, truth, maps.reshape(20, -1).max(1), foreground=fg,
                   pixel_threshold=0.7, case_ids=ids, resamples=200)
    for name in ("pixel_ap", "image_auroc", "volume_dice_fpr"):
        assert res[f"{name}_ci_low"] <= res[name] <= res[f"{name}_ci_high"], name
