"""anodiff: anomaly detection and localisation in medical images with diffusion models.

Public API (design brief): ``anodiff.create``, ``anodiff.load``, ``anodiff.methods``; a new
method subclasses ``anodiff.Detector`` with a ``LocalizationConfig`` and registers with
``anodiff.register`` (docs/ARCHITECTURE.md). The diffusion engine is in
:mod:`anodiff.diffusion`, the networks in :mod:`anodiff.nets`.

The names below are imported on first use (PEP 562), so that ``import anodiff.cli`` and
``anodiff --help`` do not load PyTorch and MONAI (seconds on a small CPU) before a command
needs them. ``anodiff.methods`` is both the subpackage and, called, the list of methods.
"""

from importlib import import_module
from typing import Any

from anodiff._version import __version__
from anodiff.errors import AnodiffError, CheckpointError

_FROM_METHODS = ("AnomalyResult", "Detector", "LocalizationConfig", "MethodInfo", "RawResult",
                 "create", "load", "register")

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


def __getattr__(name: str) -> Any:
    """Import the public names of :mod:`anodiff.methods` when first asked for."""
    if name == "methods" or name in _FROM_METHODS:
        module = import_module("anodiff.methods")
        return module if name == "methods" else getattr(module, name)
    raise AttributeError(f"module 'anodiff' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
