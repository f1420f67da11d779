import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

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
