"""What a detector returns: the public :class:`AnomalyResult`, the :class:`RawResult` of a
method's step, and :class:`MethodInfo` (one line of ``anodiff methods``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor


@dataclass(frozen=True)
class AnomalyResult:
    """What ``Detector.localize`` returns for N images of size H x W (one type for all methods).

    ``anomaly_map`` (N, H, W), higher = more anomalous; ``score`` (N,) image-level score;
    ``pseudo_healthy`` (N, C, H, W) or None; ``mask`` (N, H, W) bool — the method's mask
    rule — or None; ``uncertainty`` (N, H, W) or None; ``nfe``: network evaluations actually
    spent per image (one evaluation = one pass of a network over an image's pixels; a
    patch network's passes count by the share of the image each patch covers).
    """

    anomaly_map: Tensor
    score: Tensor
    nfe: float
    pseudo_healthy: Tensor | None = None
    mask: Tensor | None = None
    uncertainty: Tensor | None = None

    def __post_init__(self) -> None:
        if self.anomaly_map.dim() < 3:
            raise ValueError(f"anomaly_map must be (N, H, W), got {tuple(self.anomaly_map.shape)}")
        n, spatial = self.anomaly_map.shape[0], tuple(self.anomaly_map.shape[1:])
        if tuple(self.score.shape) != (n,):
            raise ValueError(f"score must be ({n},), got {tuple(self.score.shape)}")
        for name in ("mask", "uncertainty"):
            value = getattr(self, name)
            if value is not None and tuple(value.shape) != (n, *spatial):
                raise ValueError(f"{name} must be {(n, *spatial)}, got {tuple(value.shape)}")
        if self.mask is not None and self.mask.dtype != torch.bool:
            raise ValueError("mask must be a bool tensor")
        ph = self.pseudo_healthy
        if ph is not None and (ph.shape[0] != n or tuple(ph.shape[2:]) != spatial):
            raise ValueError(f"pseudo_healthy must be (N, C, *{spatial}), got {tuple(ph.shape)}")


@dataclass(frozen=True)
class RawResult:
    """What a method's :meth:`Detector.step` returns for one batch of N images.

    ``anomaly_map`` (N, H, W) before post-processing; ``nfe`` network evaluations per image
    of this batch; ``pseudo_healthy`` (N, C, H, W) and ``uncertainty`` (N, H, W) where the
    method has them; ``extras``: per-image tensors (leading axis N) that only the method's
    own mask rule reads (InvDetect's latent neighbour distances).
    """

    anomaly_map: Tensor
    nfe: float
    pseudo_healthy: Tensor | None = None
    uncertainty: Tensor | None = None
    extras: dict[str, Tensor] = field(default_factory=dict)

    def cpu(self) -> RawResult:
        """The same result with every tensor on the CPU."""
        move = _cpu_or_none
        return RawResult(self.anomaly_map.cpu(), self.nfe, move(self.pseudo_healthy),
                         move(self.uncertainty), {k: v.cpu() for k, v in self.extras.items()})

    @staticmethod
    def concat(parts: Sequence[RawResult]) -> RawResult:
        """One result from batch results in order; the NFE is the mean over all images."""
        sizes = [len(p.anomaly_map) for p in parts]
        nfe = sum(p.nfe * n for p, n in zip(parts, sizes, strict=True)) / sum(sizes)
        return RawResult(
            torch.cat([p.anomaly_map for p in parts]), nfe,
            _cat_or_none([p.pseudo_healthy for p in parts]),
            _cat_or_none([p.uncertainty for p in parts]),
            {key: torch.cat([p.extras[key] for p in parts]) for key in parts[0].extras})


def _cpu_or_none(value: Tensor | None) -> Tensor | None:
    return None if value is None else value.cpu()


def _cat_or_none(values: list[Tensor | None]) -> Tensor | None:
    return None if values[0] is None else torch.cat(values)  # type: ignore[arg-type]


@dataclass(frozen=True)
class MethodInfo:
    """One line of ``anodiff methods``."""

    name: str
    supervision: str
    description: str


@dataclass(frozen=True)
class Processed:
    """A batch after the method's step and the shared post-processing, before the mask and
    score rules: the step's ``raw`` result, the ``foreground`` (N, H, W) and the
    post-processed ``anomaly_map`` and ``uncertainty``."""

    raw: RawResult
    foreground: Tensor
    anomaly_map: Tensor
    uncertainty: Tensor | None
