"""A toy anomaly an intensity threshold cannot solve: healthy tissue in the wrong place.

Every toy brain, healthy or not, has a bright nucleus at its centre; the anomaly is a blob of
exactly that brightness in the outer ring. Its intensities lie inside the healthy range, so
a threshold (Meissen's bright / dark maps or the healthy-intensity rarity) flags the
nucleus as readily as the blob: only a model of healthy *anatomy* tells them apart. The
test asserts that the quick-preset diffusion methods with a learned healthy prior localise
the blob better (pixel AP inside the brain) than the best of the three thresholds.

Measured on this toy at the quick preset (2026-11-30, 2 cores; `benchmarks/toy_structure.py`,
tables in benchmarks/results/toy_structure_quick*.csv): best threshold 0.334 (``bright``),
anoddpm 0.750, invdetect 0.706 — and the others do not reach it at the quick preset:
counterfactual 0.180, diffano 0.144, imgcond 0.048, fndm 0.067. With 4x the quick training
counterfactual reaches 0.999, while diffano (0.275), imgcond (0.187) and fndm (0.054) stay
below the threshold: the diffano and fndm classifiers learn "bright = anomalous" from the
labels, and their guidance removes the healthy nucleus too; imgcond's synthetic-anomaly
restorer is barely trained. Those four are expected failures here (strict: a change that
makes one pass must update this file).
"""

import numpy as np
import pytest
import torch

import anodiff
from anodiff.evaluation.metrics import average_precision
from anodiff.scoring.foreground import foreground

SIZE = 24
pytestmark = pytest.mark.slow  # fits every diffusion method (~40 s on 2 cores)


def structure_toys(n: int, lesion: bool, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, 2, SIZE, SIZE) discs with an inner region and a bright central nucleus; with
    ``lesion``, a blob of the nucleus's brightness in the outer ring (and its mask)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    images = np.zeros((n, 2, SIZE, SIZE), np.float32)
    truth = np.zeros((n, SIZE, SIZE), bool)
    for i in range(n):
        cy, cx = SIZE / 2 + rng.normal(0, 0.5, 2)
        r = np.hypot(yy - cy, xx - cx)
        brain, inner, nucleus = r < SIZE * 0.42, r < SIZE * 0.22, r < SIZE * 0.15
        images[i, :, brain] = (0.5, 0.4)
        images[i, :, inner] = (0.3, 0.6)
        images[i, :, nucleus] = 0.95
        images[i] += brain * 0.02 * rng.normal(size=(2, SIZE, SIZE))
        if lesion:
            angle = rng.uniform(0, 2 * np.pi)
            ly, lx = cy + SIZE * 0.32 * np.sin(angle), cx + SIZE * 0.32 * np.cos(angle)
            truth[i] = (np.hypot(yy - ly, xx - lx) < 2.2) & brain
            images[i, :, truth[i]] = 0.95
    return torch.from_numpy(images.clip(0, 1)), torch.from_numpy(truth)


@pytest.fixture(scope="module")
def problem() -> dict:
    torch.set_num_threads(1)
    healthy, _ = structure_toys(50, False, seed=0)
    anomalous, _ = structure_toys(50, True, seed=1)
    images, truth = structure_toys(16, True, seed=3)
    items = [{"image": x, "label": 0} for x in healthy] + \
        [{"image": x, "label": 1} for x in anomalous]
    return {"items": items, "images": images, "truth": truth, "fg": foreground(images)}


def pixel_ap(detector: anodiff.Detector, problem: dict) -> float:
    maps = detector.localize(problem["images"]).anomaly_map
    fg = problem["fg"]
    return average_precision(problem["truth"][fg].numpy(), maps[fg].numpy())


@pytest.fixture(scope="module")
def threshold_ap(problem: dict) -> float:
    """The best of the intensity baselines, each fitted on the healthy slices."""
    aps = [pixel_ap(anodiff.create("threshold", mode=mode).fit(problem["items"]), problem)
           for mode in ("bright", "dark", "rarity")]
    assert max(aps) < 0.5  # the nucleus takes the threshold's flags as readily as the blob
    return max(aps)


EXPECTED_FAILURES = {"diffano", "counterfactual", "fndm", "imgcond"}  # see the docstring
BASELINES = ("threshold", "autoencoder")  # no diffusion
# A healthy prior is what is tested: supervised and semi-supervised methods learn from
# masks instead (the toy has none).
DIFFUSION = [info.name for info in anodiff.methods()
             if info.name not in BASELINES and info.supervision not in ("supervised", "semi")]


@pytest.mark.parametrize("name", [
    pytest.param(name, marks=pytest.mark.xfail(strict=True, reason="measured at the quick "
                                                "preset: below the threshold, see docstring"))
    if name in EXPECTED_FAILURES else name for name in DIFFUSION])
def test_a_healthy_prior_finds_misplaced_tissue(name: str, problem: dict,
                                                threshold_ap: float) -> None:
    detector = anodiff.create(name, preset="quick").fit(problem["items"])
    assert pixel_ap(detector, problem) > threshold_ap + 0.2
