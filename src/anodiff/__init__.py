"""anodiff: anomaly detection and localisation in medical images with diffusion models.

Public API (design brief): ``anodiff.create``, ``anodiff.load``, ``anodiff.methods``; a new
method subclasses ``anodiff.Detector`` with a ``LocalizationConfig`` and registers with
``anodiff.register`` (docs/ARCHITECTURE.md). The diffusion engine is in
:mod:`anodiff.diffusion`, the networks in :mod:`anodiff.nets`.
"""

from anodiff._version import __version__
from anodiff.errors import AnodiffError, CheckpointError
from anodiff.methods import (
    AnomalyResult,
    Detector,
    LocalizationConfig,
    MethodInfo,
    RawResult,
    create,
    load,
    register,
)
from anodiff.methods import available as methods

__all__ = [
    "AnodiffError",
    "AnomalyResult",
    "CheckpointError",
    "Detector",
    "LocalizationConfig",
    "MethodInfo",
    "RawResult",
    "__version__",
    "create",
    "load",
    "methods",
    "register",
]
