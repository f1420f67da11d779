"""The contract every method fulfils (design brief, "Python API") and the method registry.

A method is a small :class:`Detector` subclass registered under its public name::

    @register("diffano")
    class DiffAno(Detector):
        supervision = "weak"
        description = "DDIM encoding + classifier-guided decoding (Wolleb 2022)"
        def fit(self, data) -> None: ...
        def localize(self, images) -> AnomalyResult: ...

``anodiff.create(name, preset=..., **overrides)`` builds one; ``anodiff.methods()`` lists
them. Training loops, samplers, maps and metrics live in shared modules and are called.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor

from anodiff.errors import AnodiffError

SUPERVISION = ("supervised", "semi", "weak", "self", "unsupervised", "none")


@dataclass(frozen=True)
class AnomalyResult:
    """What ``Detector.localize`` returns for N images of size H x W (one type for all methods).

    ``anomaly_map`` (N, H, W), higher = more anomalous; ``score`` (N,) image-level score;
    ``pseudo_healthy`` (N, C, H, W) or None; ``mask`` (N, H, W) bool — the method's own
    binarisation — or None; ``uncertainty`` (N, H, W) or None; ``nfe``: network evaluations
    actually spent per image.
    """

    anomaly_map: Tensor
    score: Tensor
    nfe: int
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
class MethodInfo:
    """One line of ``anodiff methods``."""

    name: str
    supervision: str
    description: str


class Detector(ABC):
    """An anomaly localiser: ``fit`` on a dataset, ``localize`` images in [0, 1].

    Constructed from one frozen config dataclass (a preset, possibly with overrides).
    """

    name: ClassVar[str]
    supervision: ClassVar[str]
    description: ClassVar[str]
    presets: ClassVar[dict[str, Any]]  # preset name -> the method's frozen Config instance

    def __init__(self, config: Any) -> None:
        self.config = config

    @abstractmethod
    def fit(self, data: Any) -> None:
        """Train every part the method needs, under its supervision regime."""

    @abstractmethod
    def localize(self, images: Tensor) -> AnomalyResult:
        """Anomaly maps (and what else the method gives) for images (N, C, H, W) in [0, 1]."""

    @abstractmethod
    def save(self, path: Path) -> None:
        """Write config, safetensors weights and metadata into the directory ``path``."""


_REGISTRY: dict[str, type[Detector]] = {}


def register(name: str) -> Callable[[type[Detector]], type[Detector]]:
    """Class decorator: make a Detector available under ``name``."""

    def add(cls: type[Detector]) -> type[Detector]:
        if name in _REGISTRY:
            raise ValueError(f"method {name!r} is registered twice")
        if cls.supervision not in SUPERVISION:
            raise ValueError(f"{name}: supervision must be one of {SUPERVISION}")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return add


def available() -> list[MethodInfo]:
    """Registered methods, sorted by name."""
    return [MethodInfo(n, c.supervision, c.description) for n, c in sorted(_REGISTRY.items())]


def create(name: str, preset: str = "cpu", **overrides: Any) -> Detector:
    """Build method ``name`` with a preset's configuration and keyword overrides."""
    if name not in _REGISTRY:
        known = ", ".join(sorted(_REGISTRY)) or "none yet"
        raise AnodiffError(f"unknown method {name!r}; available: {known}")
    cls = _REGISTRY[name]
    if preset not in cls.presets:
        raise AnodiffError(f"{name}: unknown preset {preset!r}; choose one of {list(cls.presets)}")
    config = cls.presets[preset]
    unknown = sorted(set(overrides) - {f.name for f in fields(config)})
    if unknown:
        raise AnodiffError(f"{name}: unknown setting(s) {unknown}; see the method card")
    return cls(replace(config, **overrides))
