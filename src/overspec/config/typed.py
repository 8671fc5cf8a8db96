"""Build typed dataclasses from plain YAML data, validating once at the boundary.

Unknown keys are rejected with the nearest valid key suggested; wrong types name the key and the file.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import reprlib
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from overspec.registry import nearest_names
from overspec.errors import InputError

__all__ = ["ConfigError", "from_dict", "load_yaml", "parse_yaml", "short_repr", "MAX_YAML_NODES",
           "check_path_component"]

T = TypeVar("T")


class ConfigError(InputError):
    """A configuration value is wrong; the message names the file and the key."""


#: libyaml's safe loader when PyYAML was built with it (about ten times faster), else the pure-Python one.
_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

#: Most nodes a YAML document may hold with its aliases expanded (a 382-byte alias bomb expands to billions).
MAX_YAML_NODES = 100_000

#: Longest value quoted in an error message.
_MAX_QUOTED = 200

_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxdict, _REPR.maxlist, _REPR.maxtuple, _REPR.maxset = 3, 6, 6, 6, 6
_REPR.maxstring = _REPR.maxother = _MAX_QUOTED


def short_repr(value: Any) -> str:
    """``repr(value)`` cut to a bounded length, so a huge or self-referencing value never floods a message."""
    text = _REPR.repr(value)
    return text if len(text) <= _MAX_QUOTED else text[:_MAX_QUOTED - 3] + "..."


class _GuardedLoader(_SAFE_LOADER):
    """The safe loader refusing duplicated mapping keys and documents whose aliases expand beyond a budget."""

    def construct_document(self, node: yaml.Node) -> Any:
        _check_expanded_size(node)
        return super().construct_document(node)

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        _check_duplicate_keys(self, node)
        return super().construct_mapping(node, deep=deep)


def _check_expanded_size(root: yaml.Node) -> None:
    """Refuse a document with more than :data:`MAX_YAML_NODES` nodes once every alias is expanded."""
    pending, seen = [root], 0
    while pending:
        node = pending.pop()
        seen += 1
        if seen > MAX_YAML_NODES:
            raise yaml.YAMLError(f"more than {MAX_YAML_NODES} values with aliases expanded "
                                 "(an alias bomb?); refused")
        if isinstance(node, yaml.SequenceNode):
            pending.extend(node.value)
        elif isinstance(node, yaml.MappingNode):
            pending.extend(part for pair in node.value for part in pair)


def _check_duplicate_keys(loader: yaml.constructor.SafeConstructor, node: yaml.MappingNode) -> None:
    """Refuse a mapping that names one key twice (YAML would silently keep the last value)."""
    seen: set = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node, deep=True)
        try:
            duplicated = key in seen
            seen.add(key)
        except TypeError:  # an unhashable key: the constructor reports it
            continue
        if duplicated:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicated key {short_repr(key)}", key_node.start_mark)


def parse_yaml(text: str) -> Any:
    """Parse YAML text with a safe loader (plain data only), refusing duplicated keys and alias bombs."""
    return yaml.load(text, Loader=_GuardedLoader)  # noqa: S506 - a safe loader, libyaml's when present


def load_yaml(path: Path) -> Any:
    """Read a UTF-8 YAML file; any read, decode or parse failure is one :class:`ConfigError` line naming the file."""
    try:
        text = Path(path).read_bytes().decode("utf-8-sig")
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the file: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}: {exc.reason})") from None
    try:
        return parse_yaml(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {_yaml_problem(exc)}") from None


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """The parser's complaint on one line, with the line number when it has one."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    text = " ".join(f"{where}{problem}".split())
    return text if len(text) <= 2 * _MAX_QUOTED else text[:2 * _MAX_QUOTED - 3] + "..."


def check_path_component(value: str, key: str) -> str:
    """Return ``value`` if it is safe as one folder or file name (run and model names become paths), else raise."""
    problem = ""
    if value in ("", ".", ".."):
        problem = "must be a non-empty name other than '.' and '..'"
    elif any(sep in value for sep in ("/", "\\", "\0")):
        problem = "must not contain '/', '\\' or NUL (it becomes a folder name)"
    elif value.startswith(("-", ".")) or value != value.strip():
        problem = "must not start with '-' or '.' nor have surrounding spaces"
    elif any(ord(c) < 32 for c in value):
        problem = "must not contain control characters"
    if problem:
        raise InputError(f"{key} {problem}, got {short_repr(value)}")
    return value


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
            raise ConfigError(f"{where}: unknown key {short_repr(key)}{hint}")
        kwargs[key] = _convert(hints[key], value, f"{where}.{key}")
    try:
        return getattr(cls, "from_config", cls)(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {_bounded(str(exc))}") from None


def _bounded(message: str) -> str:
    """``message`` on one line and cut to a bounded length (validators may quote whole values)."""
    text = " ".join(message.split())
    return text if len(text) <= 3 * _MAX_QUOTED else text[:3 * _MAX_QUOTED - 3] + "..."


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
            raise ConfigError(f"{where}: expected a list, got {short_repr(value)}")
        inner = args[0] if args else Any
        items = [_convert(inner, v, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if hint is dict or origin in (dict, collections.abc.Mapping):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {short_repr(value)}")
        return dict(value)
    return _convert_scalar(hint, value, where)


def _raise_union_error(errors: dict[Any, str], value: Any, where: str) -> typing.NoReturn:
    """Raise the error of the one union member shaped like ``value`` (a mapping → the dataclass), else list them."""
    shaped = [message for option, message in errors.items() if _same_shape(option, value)]
    if len(shaped) == 1:
        raise ConfigError(shaped[0])
    names = " or ".join(getattr(option, "__name__", str(option)) for option in errors)
    raise ConfigError(f"{where}: expected {names}, got {short_repr(value)}")


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
    raise ConfigError(f"{where}: expected {getattr(hint, '__name__', hint)}, got {short_repr(value)}")
