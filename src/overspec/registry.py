"""A small name → entry registry, one instance per kind of thing (models, datasets, protocols, ...).

Entries are either objects or lazy ``"package.module:attr"`` strings resolved on first use, so that
registering a heavy loader costs nothing until it is asked for. Registering a name twice is an error,
and an unknown name lists the nearest registered ones.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Iterator
from typing import Generic, TypeVar

T = TypeVar("T")

__all__ = ["Registry", "RegistryError", "nearest_names"]


class RegistryError(KeyError):
    """Raised for unknown or colliding registry names; the message is meant for the user."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def nearest_names(name: str, choices: list[str] | tuple[str, ...], n: int = 3) -> list[str]:
    """Return up to ``n`` entries of ``choices`` that look most like ``name``."""
    return difflib.get_close_matches(name, list(choices), n=n, cutoff=0.5)


class Registry(Generic[T]):
    """Maps names to entries of one kind; ``kind`` is used in error messages (e.g. "dataset")."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._lazy: dict[str, str] = {}

    def register(self, name: str, entry: T, *, overwrite: bool = False) -> T:
        """Add ``entry`` under ``name``; a second registration of the same name is an error."""
        self._check_free(name, overwrite)
        self._entries[name] = entry
        return entry

    def register_lazy(self, name: str, target: str, *, overwrite: bool = False) -> None:
        """Add ``"package.module:attr"`` under ``name``; it is imported on the first ``get``."""
        if ":" not in target:
            raise ValueError(f"lazy {self.kind} target must look like 'module:attr', got {target!r}")
        self._check_free(name, overwrite)
        self._lazy[name] = target

    def unregister(self, name: str) -> None:
        """Remove ``name`` (a plug-in that is unloaded, or a test's temporary entry); an unknown name is an error."""
        if name not in self:
            raise RegistryError(self.unknown_message(name))
        self._entries.pop(name, None)
        self._lazy.pop(name, None)

    def get(self, name: str) -> T:
        """Return the entry for ``name``, importing it first if it was registered lazily."""
        if name in self._lazy:
            module_name, attr = self._lazy.pop(name).split(":", 1)
            self._entries[name] = getattr(importlib.import_module(module_name), attr)
        try:
            return self._entries[name]
        except KeyError:
            raise RegistryError(self.unknown_message(name)) from None

    def _check_free(self, name: str, overwrite: bool) -> None:
        if not overwrite and (name in self._entries or name in self._lazy):
            raise RegistryError(f"{self.kind} {name!r} is already registered")

    def unknown_message(self, name: str) -> str:
        """Return the error text for an unknown ``name``, suggesting the closest registered names."""
        close = nearest_names(name, self.names())
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        return f"unknown {self.kind} {name!r}{hint}"

    def names(self) -> list[str]:
        """Return the registered names, sorted."""
        return sorted({*self._entries, *self._lazy})

    def __contains__(self, name: object) -> bool:
        return name in self._entries or name in self._lazy

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())
