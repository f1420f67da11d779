"""Configuration files and ``--set key=value`` overrides, validated against dataclasses.

Every configurable thing in anodiff (a method's settings, training, evaluation) is a frozen
dataclass; its fields and type hints *are* the schema. YAML files and command-line
overrides are merged into plain dicts, then :func:`build` checks every key and type at this
boundary, so an unknown key or a wrong type is one clear :class:`AnodiffError` naming the
key (``train.lr: expected a number, got 'fast'``) rather than a failure deep inside, and a
value that has the right type but cannot work (a negative rate) is refused by the
dataclass's own ``__post_init__``.

Settings written by an earlier version keep loading: a dataclass whose keys changed has a
static ``upgrade_settings(values) -> values`` that :func:`build` applies first (it renames
or drops old keys and says so in its docstring).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

import yaml

from anodiff.errors import AnodiffError

T = TypeVar("T")


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping, with the file named in every error."""
    path = Path(path)
    if not path.is_file():
        raise AnodiffError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise AnodiffError(f"{path}: not UTF-8 text (byte {err.start}); save the config as "
                           "UTF-8") from err
    except OSError as err:
        raise AnodiffError(f"{path}: cannot read ({err.strerror or err})") from err
    except yaml.YAMLError as err:
        raise AnodiffError(f"{path}: not valid YAML ({one_line(err)})") from err
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise AnodiffError(f"{path}: the top level must be a mapping of keys to values")
    return data


def one_line(err: Exception) -> str:
    """A YAML error (which spans several lines, with a caret under the culprit) as one line:
    the problem and where it is."""
    if isinstance(err, yaml.MarkedYAMLError):
        mark = err.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        return f"{err.problem or err.context}{where}"
    return " ".join(str(err).split())


def parse_overrides(pairs: list[str], flag: str = "--set",
                    example: str = "train.lr=0.001") -> dict[str, Any]:
    """``["train.lr=1e-3", "method.steps=20"]`` -> nested dict; values are parsed as YAML.
    Errors name the command-line ``flag`` the pairs came from, with ``example``."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise AnodiffError(f"{flag} {pair!r}: expected KEY=VALUE, e.g. {example}")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as err:
            raise AnodiffError(f"{flag} {pair!r}: cannot parse the value ({one_line(err)})"
                               ) from err
        node = out
        *parents, leaf = key.strip().split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise AnodiffError(f"{flag} {pair!r}: {part} is set both as a value and a group")
        node[leaf] = value
    return out


def listed(settings: dict[str, Any]) -> str:
    """``{"steps": 6, "solver": "ddim"}`` -> ``steps=6, solver=ddim``: settings as
    ``parse_overrides`` reads them, for log lines, messages and tables."""
    return ", ".join(f"{k}={v}" for k, v in settings.items())


def merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge ``overrides`` into a copy of ``base`` (overrides win)."""
    out = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def build(cls: type[T], values: dict[str, Any], where: str = "", base: T | None = None) -> T:
    """Instantiate dataclass ``cls`` from ``values`` (over ``base``), checking keys and types."""
    if not isinstance(values, dict):
        raise AnodiffError(f"{where or cls.__name__}: expected a mapping, got {values!r}")
    upgrade = getattr(cls, "upgrade_settings", None)
    if upgrade is not None:
        values = upgrade(values)
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - names)
    if unknown:
        key = f"{where}.{unknown[0]}" if where else unknown[0]
        raise AnodiffError(f"{key}: unknown setting; valid keys: {', '.join(sorted(names))}")
    converted = {
        k: _convert(v, hints[k], f"{where}.{k}" if where else k,
                    None if base is None else getattr(base, k))
        for k, v in values.items()
    }
    try:
        if base is not None:
            return dataclasses.replace(base, **converted)  # type: ignore[type-var]
        return cls(**converted)
    except (TypeError, AnodiffError) as err:  # a required field is missing; a bad value
        raise AnodiffError(f"{where or cls.__name__}: {err}") from err


def _convert(value: Any, hint: Any, key: str, current: Any = None) -> Any:
    """Check ``value`` against type ``hint``; convert YAML lists to tuples, ints to floats.

    A mapping given for a nested dataclass updates ``current`` (the preset's value), so
    ``--set method.train.steps=500`` keeps the preset's other training settings.
    """
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return _convert(value, option, key, current)
            except AnodiffError as err:
                errors.append(str(err))
        raise AnodiffError(errors[0] if len(errors) == 1 else f"{key}: {value!r} fits none of "
                           f"{[getattr(a, '__name__', str(a)) for a in args]}")
    if origin is Literal:
        if value not in args:
            raise AnodiffError(f"{key}: {value!r} is not one of {list(args)}")
        return value
    if dataclasses.is_dataclass(hint):
        return build(hint, value, key, base=current if isinstance(current, hint) else None)
    if origin in (tuple, list):
        if not isinstance(value, list | tuple):
            raise AnodiffError(f"{key}: expected a list, got {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise AnodiffError(f"{key}: expected {len(args)} values, got {len(value)}")
            return tuple(_convert(v, a, key) for v, a in zip(value, args, strict=True))
        item = args[0] if args else Any
        items = [_convert(v, item, key) for v in value]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise AnodiffError(f"{key}: expected a mapping, got {value!r}")
        return {k: _convert(v, args[1], f"{key}.{k}") for k, v in value.items()} if args \
            else value
    return _scalar(value, hint, key)


def _scalar(value: Any, hint: Any, key: str) -> Any:
    if hint is bool:
        if not isinstance(value, bool):
            raise AnodiffError(f"{key}: expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise AnodiffError(f"{key}: expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise AnodiffError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise AnodiffError(f"{key}: expected text, got {value!r}")
        return value
    if hint is Path:
        if not isinstance(value, str | Path):
            raise AnodiffError(f"{key}: expected a path, got {value!r}")
        return Path(value)
    raise AnodiffError(f"{key}: settings of type {hint} cannot be given in a config")


def to_plain(obj: Any) -> Any:
    """A dataclass (tree) as JSON/YAML-friendly builtins, for run folders and reports."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, tuple | list):
        return [to_plain(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_plain(v) for k, v in obj.items()}
    if isinstance(obj, Path):
        return str(obj)
    return obj
