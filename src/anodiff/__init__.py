"""anodiff: anomaly detection and localisation in medical images with diffusion models.

Public API (design brief): ``anodiff.create``, ``anodiff.methods``; the diffusion engine
is in :mod:`anodiff.diffusion`, the networks in :mod:`anodiff.nets`.
"""

from anodiff._version import __version__
from anodiff.errors import AnodiffError, CheckpointError
from anodiff.methods import AnomalyResult, Detector, MethodInfo, create, load
from anodiff.methods import available as methods

__all__ = [
    "AnodiffError",
    "AnomalyResult",
    "CheckpointError",
    "Detector",
    "MethodInfo",
    "__version__",
    "create",
    "load",
    "methods",
]
