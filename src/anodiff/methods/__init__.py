"""Anomaly detection methods: each a :class:`~anodiff.methods.base.Detector` in its own module.

Importing this package imports every module in it, so that each method's ``@register``
runs (a new method is one new file); methods of other packages come in through the
``anodiff.methods`` entry-point group (:mod:`.registry`). The shared pipeline is in
:mod:`.base` (results in :mod:`.results`), saving and loading in :mod:`.persistence`, the
trained parts several methods use in :mod:`.parts` and :mod:`.translation`.
"""

import importlib
import pkgutil

from anodiff.methods.base import Detector, LocalizationConfig
from anodiff.methods.persistence import load
from anodiff.methods.registry import available, create, method_class, register
from anodiff.methods.results import AnomalyResult, MethodInfo, RawResult

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["AnomalyResult", "Detector", "LocalizationConfig", "MethodInfo", "RawResult",
           "available", "create", "load", "method_class", "register"]
