"""The simulated scanner: per-case contrast, bias field, gamma and Rician noise.

Everything random about a case's acquisition is drawn up front into a :class:`Scanner`
from the case's acquisition stream, before any image exists. Rendering the same case with
and without its lesion therefore applies the very same bias, gamma and noise samples, and
the two images differ exactly where the noise-free signal differs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from anodiff.data.synth.contrasts import NOMINAL, SEQUENCES
from anodiff.data.synth.fields import smooth_field


@dataclass(frozen=True, eq=False)
class Scanner:
    """One case's acquisition, per sequence.

    ``tissue_gain``: factors on the nominal T2/FLAIR tissue intensities (contrast
    variation between scanners); ``bias``: multiplicative smooth field; ``gamma``: contrast
    exponent; ``noise``: the two quadrature channels of the noise, (2, X, Y, Z), already
    scaled by the case's noise level.
    """

    tissue_gain: dict[str, dict[str, float]]
    bias: dict[str, np.ndarray]
    gamma: dict[str, float]
    noise: dict[str, np.ndarray]


def draw_scanner(shape: tuple[int, int, int], rng: np.random.Generator) -> Scanner:
    """A random acquisition for volumes of ``shape``.

    Ranges (uniform): tissue gains 0.95-1.05, bias field s.d. 0.05-0.15 (log scale,
    features ~1/4 of the field of view), gamma 0.85-1.18, noise s.d. 0.01-0.03 on the
    nominal scale (T1 white matter ~0.87), i.e. a white-matter SNR of about 30 to 90.
    """
    tissue_gain = {seq: {t: float(rng.uniform(0.95, 1.05)) for t in tissues}
                   for seq, tissues in NOMINAL.items()}
    bias, gamma, noise = {}, {}, {}
    for seq in SEQUENCES:
        bias[seq] = np.exp(smooth_field(rng, shape, nodes=4, sd=rng.uniform(0.05, 0.15)))
        gamma[seq] = float(np.exp(rng.uniform(np.log(0.85), np.log(1.18))))
        sigma = rng.uniform(0.01, 0.03)
        noise[seq] = (sigma * rng.standard_normal((2, *shape))).astype(np.float32)
    return Scanner(tissue_gain=tissue_gain, bias=bias, gamma=gamma, noise=noise)


def acquire(
    clean: dict[str, np.ndarray], foreground: np.ndarray, scanner: Scanner
) -> dict[str, np.ndarray]:
    """Bias, gamma and Rician noise on noise-free images; 0 outside the brain (skull-stripped).

    Rician: the magnitude of the complex signal ``s + n_re + i n_im``, which, like a real
    magnitude image, lifts dark regions (FLAIR CSF) above zero.
    """
    out = {}
    for seq, image in clean.items():
        signal = (scanner.bias[seq] * np.maximum(image, 0.0)) ** scanner.gamma[seq]
        n_re, n_im = scanner.noise[seq]
        magnitude = np.sqrt((signal + n_re) ** 2 + n_im**2)
        out[seq] = np.where(foreground, magnitude, 0.0).astype(np.float32)
    return out
