"""Tests for anodiff.diffusion.noise: Gaussian and batched simplex noise."""

import math
import random

import pytest
import torch

import anodiff.diffusion.noise as noise_module
from anodiff.diffusion.noise import (
    NOISE_KINDS,
    _simplex3,
    draw_noise,
    gaussian_noise,
    simplex_noise,
)
from anodiff.errors import AnodiffError

# Gustavson (2005), "Simplex noise demystified": the 12 cube-edge gradients, in his order.
GRAD3 = [
    (1, 1, 0), (-1, 1, 0), (1, -1, 0), (-1, -1, 0),
    (1, 0, 1), (-1, 0, 1), (1, 0, -1), (-1, 0, -1),
    (0, 1, 1), (0, -1, 1), (0, 1, -1), (0, -1, -1),
]  # fmt: skip
PERM = list(noise_module._PERM) * 2


def reference_simplex3(xin: float, yin: float, zin: float) -> float:
    """Per-point transcription of Gustavson's SimplexNoise.noise(x, y, z), in double."""
    f3, g3 = 1.0 / 3.0, 1.0 / 6.0
    s = (xin + yin + zin) * f3
    i, j, k = math.floor(xin + s), math.floor(yin + s), math.floor(zin + s)
    t = (i + j + k) * g3
    x0, y0, z0 = xin - (i - t), yin - (j - t), zin - (k - t)
    if x0 >= y0:
        if y0 >= z0:
            i1, j1, k1, i2, j2, k2 = 1, 0, 0, 1, 1, 0
        elif x0 >= z0:
            i1, j1, k1, i2, j2, k2 = 1, 0, 0, 1, 0, 1
        else:
            i1, j1, k1, i2, j2, k2 = 0, 0, 1, 1, 0, 1
    else:
        if y0 < z0:
            i1, j1, k1, i2, j2, k2 = 0, 0, 1, 0, 1, 1
        elif x0 < z0:
            i1, j1, k1, i2, j2, k2 = 0, 1, 0, 0, 1, 1
        else:
            i1, j1, k1, i2, j2, k2 = 0, 1, 0, 1, 1, 0
    corners = [
        (x0, y0, z0, 0, 0, 0),
        (x0 - i1 + g3, y0 - j1 + g3, z0 - k1 + g3, i1, j1, k1),
        (x0 - i2 + 2 * g3, y0 - j2 + 2 * g3, z0 - k2 + 2 * g3, i2, j2, k2),
        (x0 - 1 + 3 * g3, y0 - 1 + 3 * g3, z0 - 1 + 3 * g3, 1, 1, 1),
    ]
    ii, jj, kk = i & 255, j & 255, k & 255
    total = 0.0
    for x, y, z, di, dj, dk in corners:
        gi = PERM[ii + di + PERM[jj + dj + PERM[kk + dk]]] % 12
        tc = 0.6 - x * x - y * y - z * z
        if tc >= 0:
            gx, gy, gz = GRAD3[gi]
            total += tc**4 * (gx * x + gy * y + gz * z)
    return 32.0 * total


def corr(a: torch.Tensor, b: torch.Tensor) -> float:
    """Pearson correlation of two tensors' entries."""
    a, b = a.flatten().double(), b.flatten().double()
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / (a.norm() * b.norm()))


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_permutation_table_is_perlins() -> None:
    assert sorted(noise_module._PERM) == list(range(256))
    assert noise_module._PERM[:4] == (151, 160, 137, 91)
    assert noise_module._PERM[-4:] == (215, 61, 156, 180)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_core_matches_scalar_reference(dtype: torch.dtype) -> None:
    rng = random.Random(0)
    pts = torch.tensor(
        [[rng.uniform(-40.0, 300.0) for _ in range(3)] for _ in range(200)], dtype=dtype
    )
    # Include lattice points and points on faces shared by two tetrahedra (tied offsets).
    pts = torch.cat(
        [
            pts,
            torch.tensor(
                [[0.0, 0.0, 0.0], [1.5, 1.5, 1.5], [2.0, 2.0, 7.0], [-3.25, 4.0, 4.0]], dtype=dtype
            ),
        ]
    )
    got = _simplex3(pts[:, 0], pts[:, 1], pts[:, 2])
    want = torch.tensor([reference_simplex3(*map(float, p)) for p in pts], dtype=torch.float64)
    assert got.dtype == dtype and got.shape == (len(pts),)
    # float32 rounds coordinates of a few hundred to ~3e-5 lattice units inside the kernel.
    tol = 1e-5 if dtype == torch.float64 else 1e-3
    torch.testing.assert_close(got.double(), want, atol=tol, rtol=0)
    assert want.abs().max() > 0.3  # the points are not all near zeros of the noise


def test_core_broadcasts_its_coordinates() -> None:
    x = torch.linspace(0, 5, 7).view(1, 7)
    y = torch.linspace(-2, 3, 5).view(5, 1)
    z = torch.tensor(0.37)
    got = _simplex3(x, y, z)
    want = _simplex3(*(v.expand(5, 7).reshape(-1) for v in (x, y, z))).view(5, 7)
    torch.testing.assert_close(got, want)


@pytest.mark.parametrize("shape", [(3, 2, 24, 20), (2, 1, 8, 12, 10)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_shape_dtype_and_finite(shape: tuple[int, ...], dtype: torch.dtype) -> None:
    out = simplex_noise(shape, level=torch.arange(shape[0]) * 7, generator=gen(0), dtype=dtype)
    assert out.shape == shape and out.dtype == dtype
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("shape", [(4, 1, 64, 64), (2, 1, 16, 24, 24)])
def test_raw_single_octave_lies_in_unit_range(shape: tuple[int, ...]) -> None:
    out = simplex_noise(shape, octaves=1, frequency=4.0, normalize=False, generator=gen(1))
    assert out.abs().max() <= 1.0 + 1e-5
    assert out.abs().max() > 0.5 and out.std() > 0.2


def test_raw_octaves_stay_within_sum_of_amplitudes() -> None:
    out = simplex_noise(
        (4, 1, 64, 64), octaves=6, persistence=0.8, normalize=False, generator=gen(1)
    )
    assert out.abs().max() <= sum(0.8**o for o in range(6)) + 1e-4


def test_same_seed_reproduces_and_other_seed_differs() -> None:
    kwargs = dict(level=torch.tensor([3, 400]), octaves=4)
    a = simplex_noise((2, 3, 32, 32), generator=gen(5), **kwargs)
    b = simplex_noise((2, 3, 32, 32), generator=gen(5), **kwargs)
    c = simplex_noise((2, 3, 32, 32), generator=gen(6), **kwargs)
    assert torch.equal(a, b)
    assert (a - c).abs().mean() > 0.3


def test_consecutive_calls_draw_fresh_noise() -> None:
    g = gen(7)
    a = simplex_noise((1, 1, 64, 64), level=10, generator=g)
    b = simplex_noise((1, 1, 64, 64), level=10, generator=g)
    assert abs(corr(a, b)) < 0.5


def test_fields_of_a_batch_are_independent() -> None:
    levels = torch.randint(0, 800, (16,), generator=gen(8))
    fields = simplex_noise((16, 2, 64, 64), level=levels, generator=gen(8)).view(32, -1)
    cc = torch.corrcoef(fields.double())
    off_diagonal = cc[~torch.eye(32, dtype=torch.bool)].abs()
    assert off_diagonal.mean() < 0.25  # independent large-scale fields: chance-level only
    assert off_diagonal.max() < 0.8  # and none is a copy of another
    # Same level for all samples: the per-field offsets alone make them independent.
    same_level = simplex_noise((8, 1, 64, 64), level=100, generator=gen(9)).view(8, -1)
    cc = torch.corrcoef(same_level.double())
    assert cc[~torch.eye(8, dtype=torch.bool)].abs().mean() < 0.25


def test_normalize_standardises_each_field() -> None:
    out = simplex_noise((3, 2, 48, 40), level=torch.tensor([0, 300, 799]), generator=gen(10))
    flat = out.view(6, -1)
    torch.testing.assert_close(flat.mean(1), torch.zeros(6), atol=1e-5, rtol=0)
    torch.testing.assert_close(flat.std(1), torch.ones(6), atol=1e-4, rtol=0)
    vol = simplex_noise((2, 1, 8, 16, 16), generator=gen(10)).view(2, -1)
    torch.testing.assert_close(vol.std(1), torch.ones(2), atol=1e-4, rtol=0)


def neighbour_corr(period: float) -> float:
    out = simplex_noise(
        (4, 1, 96, 96), octaves=1, frequency=period, normalize=False, generator=gen(11)
    )
    return corr(out[..., :-1], out[..., 1:])


def test_frequency_is_the_period_in_pixels() -> None:
    smooth, medium, rough = neighbour_corr(32.0), neighbour_corr(8.0), neighbour_corr(2.0)
    assert smooth > 0.95
    assert smooth > medium > rough
    assert rough < 0.3  # neighbours half a lattice cell apart are nearly unrelated


def test_level_varies_smoothly() -> None:
    def at(level: int) -> torch.Tensor:
        return simplex_noise((8, 1, 64, 64), level=level, generator=gen(12)).view(8, -1)

    base = at(300)
    near = [corr(a, b) for a, b in zip(base, at(301), strict=True)]
    far = [corr(a, b) for a, b in zip(at(0), at(500), strict=True)]
    assert min(near) > 0.75 and sum(near) / 8 > 0.85
    assert sum(abs(c) for c in far) / 8 < 0.3
    assert not torch.equal(base, at(301))


def test_per_sample_levels_match_scalar_levels() -> None:
    # The offsets are drawn before the level is applied, so one seed gives the same offsets.
    batch = simplex_noise((2, 1, 32, 32), level=torch.tensor([5, 600]), generator=gen(13))
    first = simplex_noise((2, 1, 32, 32), level=5, generator=gen(13))
    second = simplex_noise((2, 1, 32, 32), level=600, generator=gen(13))
    torch.testing.assert_close(batch[0], first[0])
    torch.testing.assert_close(batch[1], second[1])


def test_level_shifts_depth_in_3d() -> None:
    # In 3-D the level is added to the depth coordinate: with a single octave, the volume
    # at level `period` equals the volume at level 0 shifted by one slice along depth.
    kwargs = dict(octaves=1, frequency=4.0, normalize=False)
    v0 = simplex_noise((1, 1, 6, 8, 8), level=0, generator=gen(14), **kwargs)
    v1 = simplex_noise((1, 1, 6, 8, 8), level=1, generator=gen(14), **kwargs)
    torch.testing.assert_close(v1[:, :, :-1], v0[:, :, 1:], atol=2e-4, rtol=0)


def test_chunked_evaluation_matches_single_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    args = ((5, 2, 16, 16),)
    kwargs = dict(level=torch.arange(5) * 100, octaves=3)
    whole = simplex_noise(*args, generator=gen(15), **kwargs)
    monkeypatch.setattr(noise_module, "_MAX_POINTS", 3 * 16 * 16 * 3)  # 3 fields per pass
    chunked = simplex_noise(*args, generator=gen(15), **kwargs)
    torch.testing.assert_close(chunked, whole)


@pytest.mark.parametrize(
    ("shape", "kwargs"),
    [
        ((1, 32, 32), {}),
        ((2, 1, 0, 8), {}),
        ((2, 1, 8, 8), {"octaves": 0}),
        ((2, 1, 8, 8), {"frequency": 0.0}),
        ((2, 1, 8, 8), {"level": torch.tensor([1, 2, 3])}),
    ],
)
def test_bad_arguments_raise(shape: tuple[int, ...], kwargs: dict) -> None:
    with pytest.raises(AnodiffError, match="simplex_noise"):
        simplex_noise(shape, **kwargs)


def test_gaussian_noise() -> None:
    a = gaussian_noise((4, 1, 32, 32), generator=gen(16))
    b = gaussian_noise((4, 1, 32, 32), generator=gen(16))
    assert a.shape == (4, 1, 32, 32) and a.dtype == torch.float32
    assert torch.equal(a, b)
    assert abs(a.mean()) < 0.05 and abs(a.std() - 1) < 0.05
    assert gaussian_noise((2, 3), dtype=torch.float64).dtype == torch.float64


def test_draw_noise_dispatches() -> None:
    assert NOISE_KINDS == ("gaussian", "simplex")
    shape = (2, 1, 16, 16)
    torch.testing.assert_close(
        draw_noise("gaussian", shape, level=3, generator=gen(17)),
        gaussian_noise(shape, generator=gen(17)),
    )
    torch.testing.assert_close(
        draw_noise("simplex", shape, level=3, generator=gen(17), octaves=2, frequency=8.0),
        simplex_noise(shape, level=3, generator=gen(17), octaves=2, frequency=8.0),
    )


def test_draw_noise_unknown_kind_raises() -> None:
    with pytest.raises(AnodiffError, match="perlin"):
        draw_noise("perlin", (1, 1, 8, 8))
