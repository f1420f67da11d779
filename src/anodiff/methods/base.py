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
from dataclasses import dataclass, fields, is_dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from anodiff.config import build, to_plain
from anodiff.diffusion.checkpoint import load_state_into, read_checkpoint, write_checkpoint
from anodiff.errors import AnodiffError, CheckpointError

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
    Subclasses create their networks in :meth:`build` (called by ``fit`` once the input
    shape is known, and by :func:`load`), list them in :meth:`networks` (keyed by the name
    of the attribute that holds each), and keep any other
    fitted numbers (thresholds, histograms, memory banks) in :meth:`state` /
    :meth:`load_state`; saving and loading is then generic.
    """

    name: ClassVar[str]
    supervision: ClassVar[str]
    description: ClassVar[str]
    presets: ClassVar[dict[str, Any]]  # preset name -> the method's frozen Config instance
    # Settings that :meth:`state` does not depend on (a retune may change them freely).
    state_free_settings: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, config: Any) -> None:
        self.config = config
        self.input_shape: tuple[int, ...] | None = None  # (C, H, W) the method was fitted on
        # Where training checkpoints go (set by `anodiff train`); fit resumes from it.
        self.run_dir: Path | None = None

    @abstractmethod
    def fit(self, data: Any) -> None:
        """Train every part the method needs, under its supervision regime."""

    @abstractmethod
    def localize(self, images: Tensor) -> AnomalyResult:
        """Anomaly maps (and what else the method gives) for images (N, C, H, W) in [0, 1]."""

    def build(self, input_shape: tuple[int, ...]) -> None:
        """Create the networks for inputs of ``input_shape`` (C, H, W)."""
        self.input_shape = tuple(int(v) for v in input_shape)

    def networks(self) -> dict[str, nn.Module]:
        """The trained networks, by name (saved as safetensors)."""
        return {}

    def state(self) -> dict[str, Tensor]:
        """Fitted values that are not network weights."""
        return {}

    def load_state(self, state: dict[str, Tensor]) -> None:
        """Restore what :meth:`state` returned (the base class has nothing to restore)."""
        if state:
            raise CheckpointError(f"{self.name}: unexpected saved values {sorted(state)}")

    def fit_normality(self, healthy: Tensor) -> None:
        """Refit what the method fits on healthy training images after training (``healthy``
        (N, C, H, W) in [0, 1]), so settings it depends on can change without retraining.

        Methods with such a fit override this (InvDetect: one-class model, tau, lambda); the
        others have nothing to refit and refuse.
        """
        raise AnodiffError(f"{self.name} fits nothing after training; export without a refit "
                           "(or train again with the new settings)")

    def retuned(self, *, keep_state: bool = False, **settings: Any) -> Detector:
        """A copy with changed test-time settings that shares this detector's fitted parts.

        Only settings that do not shape what was trained may change (a setting holding a
        nested config, such as a network part with its training, may not): this is how a
        sensitivity study or an export fixes L, s or the solver without retraining.

        Fitted values other than weights (:meth:`state`, e.g. a threshold calibrated on
        healthy maps) were computed with the current settings and would be stale, so a
        detector that has them refuses to change any setting outside its
        ``state_free_settings``, unless ``keep_state=True`` accepts that its masks (not its
        maps) keep the old calibration.
        """
        self.check_fitted()
        state = self.state()
        stale = sorted(set(settings) - self.state_free_settings)
        if state and stale and not keep_state:
            raise AnodiffError(
                f"{self.name}: its fitted {sorted(state)} were calibrated with the current "
                f"settings and would be stale after changing {stale}; train with "
                "these settings instead (anodiff train --set ...)")
        names = {f.name: f for f in fields(self.config)}
        unknown = sorted(set(settings) - set(names))
        if unknown:
            raise AnodiffError(f"{self.name}: unknown setting(s) {unknown}")
        trained = sorted(k for k in settings if is_dataclass(getattr(self.config, k)))
        if trained:
            raise AnodiffError(f"{self.name}: {trained} describe trained parts; retrain "
                               "instead of changing them")
        config = build(type(self.config), {**to_plain(self.config), **settings}, self.name)
        other = type(self)(config)
        other.input_shape = self.input_shape
        for key, net in self.networks().items():
            setattr(other, key, net)
        other.load_state(state)
        return other

    def check_fitted(self) -> None:
        """Refuse to localise with an untrained detector (a clear error, not garbage maps)."""
        if self.input_shape is None:
            raise AnodiffError(f"{self.name}: call fit() (or anodiff.load a saved run) first")

    def save(self, path: str | Path) -> Path:
        """Write config, weights (safetensors) and metadata into directory ``path``."""
        self.check_fitted()
        groups = {f"net_{key}": net.state_dict() for key, net in self.networks().items()}
        groups["state"] = self.state()
        meta = {"method": self.name, "config": to_plain(self.config),
                "input_shape": list(self.input_shape or ())}
        return write_checkpoint(Path(path), groups, meta)


def load(path: str | Path) -> Detector:
    """Load a detector written by :meth:`Detector.save` (or a run folder's ``model``)."""
    groups, meta = read_checkpoint(Path(path))
    if meta.get("method") not in _REGISTRY:
        raise CheckpointError(f"{path}: unknown method {meta.get('method')!r} in its metadata")
    cls = _REGISTRY[meta["method"]]
    config = build(type(next(iter(cls.presets.values()))), meta["config"], meta["method"])
    detector = cls(config)
    detector.build(tuple(meta["input_shape"]))
    for key, net in detector.networks().items():
        load_state_into(net, groups.get(f"net_{key}", {}), Path(path) / f"net_{key}.safetensors")
        net.eval()
    detector.load_state(groups.get("state", {}))
    return detector


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


def method_class(name: str) -> type[Detector]:
    """The Detector class registered as ``name`` (a clear error for unknown names)."""
    if name not in _REGISTRY:
        known = ", ".join(sorted(_REGISTRY)) or "none yet"
        raise AnodiffError(f"unknown method {name!r}; available: {known}")
    return _REGISTRY[name]


def create(name: str, preset: str = "cpu", **overrides: Any) -> Detector:
    """Build method ``name`` with a preset's configuration and keyword overrides."""
    cls = method_class(name)
    if preset not in cls.presets:
        raise AnodiffError(f"{name}: unknown preset {preset!r}; choose one of {list(cls.presets)}")
    config = cls.presets[preset]
    unknown = sorted(set(overrides) - {f.name for f in fields(config)})
    if unknown:
        raise AnodiffError(f"{name}: unknown setting(s) {unknown}; see the method card")
    return cls(replace(config, **overrides))
