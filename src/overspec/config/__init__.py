"""Typed configuration: dataclasses loaded from YAML, mirrored by the CLI."""

from overspec.config.typed import ConfigError, from_dict, load_yaml

__all__ = ["ConfigError", "from_dict", "load_yaml"]
