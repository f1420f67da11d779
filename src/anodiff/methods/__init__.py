"""Anomaly detection methods: each a :class:`~anodiff.methods.base.Detector` in its own module.

Importing this package imports every method module so that their ``@register`` decorators
run; :func:`anodiff.methods.base.available` then lists them.
"""

# Importing the method modules registers them (each ends in an @register'ed Detector).
from anodiff.methods import (  # noqa: F401
    anoddpm,
    autoencoder,
    counterfactual,
    diffano,
    fndm,
    imgcond,
    invdetect,
    threshold,
)
from anodiff.methods.base import (
    AnomalyResult,
    Detector,
    MethodInfo,
    available,
    create,
    load,
    register,
)

__all__ = ["AnomalyResult", "Detector", "MethodInfo", "available", "create", "load", "register"]
