"""Intensity anomalies: Baugh's smooth intensity change (task 4) and simplex-noise blobs.

Baugh 2024 (shared notes), task 4: inside each anomaly shape add
+-(0.05 + Gamma(3, 0.1)) times a fractal noise map, with the edges ramped by a distance
transform so the change fades in from the shape's boundary. Here the noise map is the
project's batched simplex noise (:func:`anodiff.diffusion.noise.simplex_noise`) rescaled to
[0, 1] per image, and the ramp is min(1, depth / (half the shape's largest depth)), depth
being the Euclidean distance to the nearest pixel outside the shape.

:func:`simplex_blobs` is the AnoDDPM flavour (Wyatt 2022) for self-supervised
baselines: thresholded simplex noise makes irregular blobs, which are brightened or darkened.

Fractal settings follow AnoDDPM scaled to the image: the first octave's period is a quarter
of the image size (64 px at 256^2), persistence 0.8, and octaves are added while their
period is at least 2 px (6 octaves at 256^2, 4 at 64^2).

Speed caveat (measured here, 2 cores, 2026-11-22): both tasks spend most of their time in
the torch simplex noise. On an idle CPU that is tens of ms for 32 x 1 x 64 x 64, but while
other processes keep the cores busy torch's 2 intra-op threads wait on each other and a
call can take 0.2-1.3 s; with ``torch.set_num_threads(1)`` (the setting inside DataLoader
workers) it stayed at 0.1-0.26 s under the same load.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage

from anodiff.data.anomalies._common import (
    check_images,
    check_rng,
    resolve_foreground,
    write_inside,
)
from anodiff.data.anomalies.shapes import sample_shape_masks
from anodiff.diffusion.noise import simplex_noise
from anodiff.errors import AnodiffError

PERSISTENCE = 0.8
BLOB_COVERAGE = (0.02, 0.15)  # fraction of the foreground covered by blobs
BLOB_AMPLITUDE = (0.1, 0.4)


def fractal_noise(n: int, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` standardised fractal simplex noise maps (n, H, W), drawn from ``rng``."""
    period = max(height, width) / 4.0
    octaves = max(1, min(6, int(np.floor(np.log2(period / 2.0))) + 1))
    generator = torch.Generator().manual_seed(int(rng.integers(2**63 - 1)))
    noise = simplex_noise(
        (n, 1, height, width),
        octaves=octaves,
        persistence=PERSISTENCE,
        frequency=period,
        generator=generator,
        dtype=torch.float64,
    )
    return noise[:, 0].numpy()


def add_fractal_intensity(
    images: np.ndarray, stacks: list[np.ndarray], rng: np.random.Generator
) -> np.ndarray:
    """Baugh's intensity change inside each shape of ``stacks`` (image i: (k, H, W)), float64.

    Every shape gets its own sign and amplitude 0.05 + Gamma(3, 0.1) and its own ramp; one
    noise map per image modulates them all, identically in every channel. Not clipped.
    """
    n, _, height, width = images.shape
    noise = fractal_noise(n, height, width, rng)
    low = noise.min(axis=(1, 2), keepdims=True)
    noise = (noise - low) / np.maximum(noise.max(axis=(1, 2), keepdims=True) - low, 1e-12)
    change = np.zeros((n, height, width))
    for i, stack in enumerate(stacks):
        for mask in stack:
            amplitude = rng.choice((-1.0, 1.0)) * (0.05 + rng.gamma(3.0, 0.1))
            depth = ndimage.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
            ramp = np.minimum(depth / max(0.5 * depth.max(), 1.0), 1.0)
            change[i] += amplitude * ramp
    return images + (change * noise)[:, None]


def intensity_change(
    images: np.ndarray,
    *,
    rng: np.random.Generator,
    foreground: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Task 4: smooth fractal intensity change inside 1-4 random shapes per image.

    Returns (corrupted images, masks (N, H, W)). Speed for 32 x 1 x 64 x 64, median of 7
    calls (measured here, 2 cores, 2026-11-22): 75-120 ms; see the module docstring for
    timings on a busy CPU.
    """
    check_images(images)
    check_rng(rng)
    foreground = resolve_foreground(images, foreground)
    stacks = sample_shape_masks(foreground, rng)
    masks = np.stack([stack.any(axis=0) for stack in stacks])
    return write_inside(images, add_fractal_intensity(images, stacks, rng), masks), masks


def simplex_blobs(
    images: np.ndarray,
    *,
    rng: np.random.Generator,
    foreground: np.ndarray | None = None,
    coverage: tuple[float, float] = BLOB_COVERAGE,
    amplitude: tuple[float, float] = BLOB_AMPLITUDE,
) -> tuple[np.ndarray, np.ndarray]:
    """AnoDDPM-style blobs: the top ``coverage`` of a simplex field over the foreground.

    Per image a coverage fraction q and an amplitude a are drawn uniformly from their
    ranges; the blobs are the foreground pixels where the noise is among its top q, and
    they are shifted by +-a x (0.5 + 0.5 x their height above the threshold), so blob
    edges are sharp and their insides vary smoothly. Returns (corrupted images, masks).
    Speed for 32 x 1 x 64 x 64, median of 7 calls (measured here, 2 cores, 2026-11-22):
    25-80 ms; see the module docstring for timings on a busy CPU.
    """
    check_images(images)
    check_rng(rng)
    for name, (low, high) in (("coverage", coverage), ("amplitude", amplitude)):
        if not 0.0 < low <= high <= 1.0:
            raise AnodiffError(f"{name} must be a range (low, high) in (0, 1], got {(low, high)}")
    foreground = resolve_foreground(images, foreground)
    n, _, height, width = images.shape
    noise = fractal_noise(n, height, width, rng)
    fractions = rng.uniform(*coverage, size=n)
    shifts = rng.choice((-1.0, 1.0), size=n) * rng.uniform(*amplitude, size=n)
    masks = np.zeros((n, height, width), dtype=bool)
    change = np.zeros((n, height, width))
    for i in range(n):
        values = noise[i][foreground[i]]
        count = max(1, int(round(fractions[i] * values.size)))
        threshold = np.partition(values, values.size - count)[values.size - count]
        masks[i] = foreground[i] & (noise[i] >= threshold)
        height_above = (noise[i] - threshold) / max(values.max() - threshold, 1e-12)
        change[i] = shifts[i] * (0.5 + 0.5 * height_above)
    return write_inside(images, images + change[:, None], masks), masks
