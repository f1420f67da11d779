"""The simulated scanner: per-case contrast, resolution, bias field, gamma and Rician noise.

Everything random about a case's acquisition is drawn up front into a :class:`Scanner`
from the case's acquisition stream, before any image exists. Rendering the same case with
and without its lesion therefore applies the very same bias, gamma and noise samples, and
the two images differ exactly where the noise-free signal differs.

Two families of scanners exist: :data:`STANDARD` (every track's cases) and :data:`SHIFTED`
(the ``shift`` track's test cases: another contrast curve, a stronger bias field, more
noise and a coarser resolution), so a method trained on standard cases meets a scanner
change at test time (review Sec. 6.3: distribution shift).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from anodiff.data.synth.contrasts import NOMINAL, SEQUENCES
from anodiff.data.synth.fields import smooth_field


@dataclass(frozen=True)
class ScannerRanges:
    """Uniform ranges a :class:`Scanner` is drawn from.

    ``gamma`` is drawn log-uniformly; with ``invert_gamma`` it is inverted for half of the
    cases (a contrast curve bent either way, never the training one). ``blur`` holds the
    in-plane and through-plane Gaussian point-spread s.d. ranges in voxels (a coarser
    resolution); None leaves the native resolution.
    """

    gain: tuple[float, float]
    bias_sd: tuple[float, float]
    gamma: tuple[float, float]
    noise_sd: tuple[float, float]
    invert_gamma: bool = False
    blur: tuple[tuple[float, float], tuple[float, float]] | None = None


STANDARD = ScannerRanges(gain=(0.95, 1.05), bias_sd=(0.05, 0.15), gamma=(0.85, 1.18),
                         noise_sd=(0.01, 0.03))
"""Every case of the intensity and structural tracks: a white-matter SNR of about 30-90."""
SHIFTED = ScannerRanges(gain=(0.85, 1.15), bias_sd=(0.2, 0.3), gamma=(1.25, 1.5),
                        noise_sd=(0.035, 0.05), invert_gamma=True,
                        blur=((0.5, 0.9), (0.8, 1.3)))
"""The ``shift`` track's test cases: gamma 0.67-0.8 or 1.25-1.5 (outside 0.85-1.18),
tissue gains +-15 %, bias s.d. 0.2-0.3, noise s.d. 0.035-0.05 (SNR about 17-25) and a
point-spread of 0.5-0.9 voxels in-plane and 0.8-1.3 through-plane (about 1.5-2x coarser)."""


@dataclass(frozen=True, eq=False)
class Scanner:
    """One case's acquisition, per sequence.

    ``tissue_gain``: factors on the nominal T2/FLAIR tissue intensities (contrast
    variation between scanners); ``bias``: multiplicative smooth field; ``gamma``: contrast
    exponent; ``noise``: the two quadrature channels of the noise, (2, X, Y, Z), already
    scaled by the case's noise level; ``blur``: per sequence, the (x, y, z) point-spread
    s.d. in voxels, or None at native resolution.
    """

    tissue_gain: dict[str, dict[str, float]]
    bias: dict[str, np.ndarray]
    gamma: dict[str, float]
    noise: dict[str, np.ndarray]
    blur: dict[str, tuple[float, float, float] | None]


def draw_scanner(shape: tuple[int, int, int], rng: np.random.Generator,
                 ranges: ScannerRanges = STANDARD) -> Scanner:
    """A random acquisition for volumes of ``shape`` from ``ranges``.

    Standard ranges (uniform): tissue gains 0.95-1.05, bias field s.d. 0.05-0.15 (log
    scale, features ~1/4 of the field of view), gamma 0.85-1.18, noise s.d. 0.01-0.03 on
    the nominal scale (T1 white matter ~0.87), i.e. a white-matter SNR of about 30 to 90.
    """
    tissue_gain = {seq: {t: float(rng.uniform(*ranges.gain)) for t in tissues}
                   for seq, tissues in NOMINAL.items()}
    bias, gamma, noise, blur = {}, {}, {}, {}
    for seq in SEQUENCES:
        bias[seq] = np.exp(smooth_field(rng, shape, nodes=4, sd=rng.uniform(*ranges.bias_sd)))
        gamma[seq] = float(np.exp(rng.uniform(*np.log(ranges.gamma))))
        sigma = rng.uniform(*ranges.noise_sd)
        noise[seq] = (sigma * rng.standard_normal((2, *shape))).astype(np.float32)
        if ranges.invert_gamma and rng.random() < 0.5:
            gamma[seq] = 1.0 / gamma[seq]
        blur[seq] = None
        if ranges.blur is not None:
            in_plane, through = (float(rng.uniform(*r)) for r in ranges.blur)
            blur[seq] = (in_plane, in_plane, through)
    return Scanner(tissue_gain=tissue_gain, bias=bias, gamma=gamma, noise=noise, blur=blur)


def acquire(
    clean: dict[str, np.ndarray], foreground: np.ndarray, scanner: Scanner
) -> dict[str, np.ndarray]:
    """Point spread, bias, gamma and Rician noise on noise-free images; 0 outside the brain.

    Rician: the magnitude of the complex signal ``s + n_re + i n_im``, which, like a real
    magnitude image, lifts dark regions (FLAIR CSF) above zero.
    """
    out = {}
    for seq, image in clean.items():
        image = np.maximum(image, 0.0)
        if scanner.blur[seq] is not None:
            image = ndi.gaussian_filter(image, scanner.blur[seq], mode="constant")
        signal = (scanner.bias[seq] * image) ** scanner.gamma[seq]
        n_re, n_im = scanner.noise[seq]
        magnitude = np.sqrt((signal + n_re) ** 2 + n_im**2)
        out[seq] = np.where(foreground, magnitude, 0.0).astype(np.float32)
    return out
