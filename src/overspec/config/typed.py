"""Build typed dataclasses from plain YAML data, validating once at the boundary.

Unknown keys are rejected with the nearest valid key suggested; wrong types name the key and the file.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from overspec.registry import nearest_names

__all__ = ["ConfigError", "from_dict", "load_yaml"]

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration value is wrong; the message names the file and the key."""


#: libyaml's safe loader when PyYAML was built with it (about ten times faster), else the pure-Python one.
_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def parse_yaml(text: str) -> Any:
    """Parse YAML text with a safe loader (plain data only: no Python objects are ever built)."""
    return yaml.load(text, Loader=_SAFE_LOADER)  # noqa: S506 - a safe loader, libyaml's when present


def load_yaml(path: Path) -> Any:
    """Read a YAML file, turning parse errors into a :class:`ConfigError` naming the file."""
    try:
        return parse_yaml(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None


def from_dict(cls: type[T], data: Any, where: str) -> T:
    """Return ``cls(**data)`` (``cls.from_config(**data)`` when defined) with nested dataclasses built recursively;
    ``where`` prefixes error messages."""
    if isinstance(data, cls):
        return data
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping for {cls.__name__}, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in data.items():
        if key not in fields:
            close = nearest_names(str(key), list(fields))
            hint = f"; did you mean {close[0]!r}?" if close else f"; valid keys: {', '.join(fields)}"
            raise ConfigError(f"{where}: unknown key {key!r}{hint}")
        kwargs[key] = _convert(hints[key], value, f"{where}.{key}")
    try:
        return getattr(cls, "from_config", cls)(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _convert(hint: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = {}
        for option in (a for a in args if a is not type(None)):
            try:
                return _convert(option, value, where)
            except ConfigError as exc:
                errors[option] = str(exc)
        return _raise_union_error(errors, value, where)
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, where)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        inner = args[0] if args else Any
        items = [_convert(inner, v, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if hint is dict or origin in (dict, collections.abc.Mapping):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    return _convert_scalar(hint, value, where)


def _raise_union_error(errors: dict[Any, str], value: Any, where: str) -> typing.NoReturn:
    """Raise the error of the one union member shaped like ``value`` (a mapping → the dataclass), else list them."""
    shaped = [message for option, message in errors.items() if _same_shape(option, value)]
    if len(shaped) == 1:
        raise ConfigError(shaped[0])
    names = " or ".join(getattr(option, "__name__", str(option)) for option in errors)
    raise ConfigError(f"{where}: expected {names}, got {value!r}")


def _same_shape(hint: Any, value: Any) -> bool:
    """Whether ``value`` has the container shape ``hint`` asks for (mapping, list or scalar)."""
    origin = typing.get_origin(hint)
    if isinstance(value, dict):
        return dataclasses.is_dataclass(hint) or hint is dict or origin in (dict, collections.abc.Mapping)
    if isinstance(value, (list, tuple)):
        return origin in (list, tuple)
    return not (dataclasses.is_dataclass(hint) or origin in (list, tuple, dict, collections.abc.Mapping))


def _convert_scalar(hint: Any, value: Any, where: str) -> Any:
    if hint is Any:
        return value
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if hint is str and isinstance(value, (str, Path)):
        return str(value)
    if hint is bool and isinstance(value, bool):
        return value
    if hint is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if hint is type(None) and value is None:
        return None
    raise ConfigError(f"{where}: expected {getattr(hint, '__name__', hint)}, got {value!r}")
