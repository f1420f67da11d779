"""Anomaly detection methods: each a :class:`~anodiff.methods.base.Detector` in its own module.

Importing this package imports every module in it, so that each method's ``@register``
runs (a new method is one new file); methods of other packages come in through the
``anodiff.methods`` entry-point group (:mod:`.registry`). The shared pipeline is in
:mod:`.base` (results in :mod:`.results`), saving and loading in :mod:`.persistence`, the
trained parts several methods use in :mod:`.parts` and :mod:`.translation`.
"""

import importlib
import pkgutil
import sys
import types

from anodiff.methods.base import Detector, LocalizationConfig
from anodiff.methods.persistence import load
from anodiff.methods.registry import (
    available,
    create,
    method_class,
    preset_changes,
    register,
)
from anodiff.methods.results import AnomalyResult, MethodInfo, RawResult

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")



class _CallableModule(types.ModuleType):
    """This package, callable: ``anodiff.methods()`` lists the methods (the design brief's
    API), while ``anodiff.methods.create`` and friends stay module attributes."""

    def __call__(self) -> list[MethodInfo]:
        return available()


sys.modules[__name__].__class__ = _CallableModule

__all__ = ["AnomalyResult", "Detector", "LocalizationConfig", "MethodInfo", "RawResult",
           "available", "create", "load", "method_class", "preset_changes", "register"]
