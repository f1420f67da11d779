"""The method registry: anodiff's own methods and those other packages install.

A method registers itself with :func:`register` when its module is imported
(``anodiff.methods`` imports every module of the package). Another package adds methods
through the ``anodiff.methods`` entry-point group: an entry whose value is a module (or a
Detector class) in that package, e.g. in its ``pyproject.toml``::

    [project.entry-points."anodiff.methods"]
    mymethod = "mypackage.mymethod"

Entry points are loaded the first time a method is looked up or listed; one that fails to
import or registers nothing is skipped with a warning naming it, so a broken plug-in never
breaks anodiff itself.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import fields, is_dataclass, replace
from importlib.metadata import entry_points
from typing import Any

from anodiff.catalogue import ENTRY_POINT_GROUP
from anodiff.errors import AnodiffError
from anodiff.methods.base import SUPERVISION, Detector
from anodiff.methods.results import MethodInfo

log = logging.getLogger(__name__)

_REGISTRY: dict[str, type[Detector]] = {}
_plugins_loaded = False


def register(name: str) -> Callable[[type[Detector]], type[Detector]]:
    """Class decorator: make a Detector available under ``name``."""

    def add(cls: type[Detector]) -> type[Detector]:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"method {name!r} is registered twice")
        if cls.supervision not in SUPERVISION:
            raise ValueError(f"{name}: supervision must be one of {SUPERVISION}")
        if not cls.presets:
            raise ValueError(f"{name}: needs at least one preset")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return add


def unregister(name: str) -> None:
    """Remove method ``name`` (tests and interactive sessions that define throw-away ones)."""
    _REGISTRY.pop(name, None)


def load_plugins() -> None:
    """Import the modules of the ``anodiff.methods`` entry points (once per process)."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        before = set(_REGISTRY)
        try:
            loaded = entry.load()
        except Exception as err:  # a plug-in's own bug must not break anodiff
            log.warning("method plug-in %s (%s) failed to load: %s", entry.name, entry.value,
                        err)
            continue
        if isinstance(loaded, type) and issubclass(loaded, Detector) and \
                loaded not in _REGISTRY.values():
            register(entry.name)(loaded)
        elif set(_REGISTRY) == before and entry.name not in _REGISTRY:
            log.warning("method plug-in %s (%s) registered no method", entry.name, entry.value)


def available() -> list[MethodInfo]:
    """Registered methods (built in and plug-ins), sorted by name."""
    load_plugins()
    return [MethodInfo(n, c.supervision, c.description) for n, c in sorted(_REGISTRY.items())]


def method_class(name: str) -> type[Detector]:
    """The Detector class registered as ``name`` (a clear error for unknown names)."""
    load_plugins()
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
    try:
        return cls(replace(config, **overrides))
    except AnodiffError as err:  # a value its config refuses
        raise AnodiffError(f"{name}: {err}") from err


def preset_changes(name: str, preset: str, base: str = "cpu") -> dict[str, Any]:
    """The test-time settings in which method ``name``'s ``preset`` differs from its ``base``
    preset: what turns a run trained with ``base`` into that preset at test time (``fast``:
    fewer network evaluations; :meth:`Detector.retuned` applies them, a refit follows).

    A preset that trains something else (a nested setting differs) cannot be reached from a
    finished run and is refused with a named error; a method without ``preset`` too."""
    cls = method_class(name)
    for wanted in (preset, base):
        if wanted not in cls.presets:
            raise AnodiffError(f"{name}: unknown preset {wanted!r}; choose one of "
                               f"{list(cls.presets)}")
    target, reference = cls.presets[preset], cls.presets[base]
    changes = {f.name: getattr(target, f.name) for f in fields(target)
               if getattr(target, f.name) != getattr(reference, f.name)}
    trained = sorted(k for k, v in changes.items() if is_dataclass(v))
    if trained:
        raise AnodiffError(f"{name}: its {preset} preset trains {trained} differently from "
                           f"{base}; train with --preset {preset} instead")
    return changes
