"""Read the tensors of a TorchScript archive (OpenAI's ``ViT-B-16.pt``) without running code from it.

A TorchScript archive is a zip holding ``<name>/code/`` (the model's Python-like source), ``<name>/data.pkl`` (the
module tree: each module a ``__torch__.*`` object whose state maps attribute names to tensors, flags and child
modules), ``<name>/constants.pkl`` and one ``<name>/data/<key>`` file per storage. ``torch.jit.load`` compiles and
runs the code; this reader never does. It unpickles ``data.pkl`` through :func:`overspec.safeload.restricted_loads`
with every global replaced by a stand-in of its own: ``__torch__.*`` classes become plain attribute holders,
``torch.<T>Storage`` becomes a dtype, ``torch._utils._rebuild_tensor_v2`` a bounds-checked view of the storage read
from ``data/<key>``; any other global is refused with :class:`~overspec.safeload.UnsafeFileError`. The result is the
state dict ``model.state_dict()`` of the loaded module would give (``visual.conv1.weight``,
``transformer.resblocks.0.attn.in_proj_weight``, ``positional_embedding``, ...).
"""

from __future__ import annotations

import collections
import math
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from overspec.safeload import UnreadableFileError, restricted_loads

__all__ = ["ScriptModuleState", "TORCHSCRIPT_ONLY_KEYS", "is_torchscript_archive", "read_torchscript_state_dict"]

#: Entries of OpenAI's TorchScript CLIP state that are settings, not weights (open_clip drops them too).
TORCHSCRIPT_ONLY_KEYS = ("input_resolution", "context_length", "vocab_size")

_STORAGE_DTYPES = {
    "FloatStorage": torch.float32, "HalfStorage": torch.float16, "DoubleStorage": torch.float64,
    "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8, "BoolStorage": torch.bool,
}
#: TorchScript's typed-container helpers; each returns its first argument, the container itself.
_PASS_THROUGH = {"restore_type_tag", "build_intlist", "build_doublelist", "build_boollist", "build_tensorlist"}
_GLOBAL_OF_TORCH_CLASS = re.compile(rb"c__torch__[\w.]*\n")


class ScriptModuleState:
    """A TorchScript module as plain data: its class name and its attributes (tensors, flags, child modules)."""

    qualified_name = ""

    def __setstate__(self, state: Any) -> None:
        self.attributes = state if isinstance(state, dict) else {}


@dataclass(frozen=True)
class _StorageType:
    """Stand-in for ``torch.<T>Storage``: only its dtype is used."""

    dtype: torch.dtype


def is_torchscript_archive(path: str | Path) -> bool:
    """Whether ``path`` is a TorchScript zip: a ``code/`` folder beside ``data.pkl``, or ``__torch__`` classes in it."""
    path = Path(path)
    if not zipfile.is_zipfile(path):
        return False
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            pickles = [n for n in names if n.count("/") == 1 and n.endswith("/data.pkl")]
            if not pickles:
                return False
            prefix = pickles[0][: -len("data.pkl")]
            if any(n.startswith(f"{prefix}code/") for n in names):
                return True
            return bool(_GLOBAL_OF_TORCH_CLASS.search(archive.read(pickles[0])))
    except (zipfile.BadZipFile, OSError, KeyError):
        return False


def read_torchscript_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Return the parameters and buffers of a TorchScript archive by module path, running none of its code."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            prefix = _archive_prefix(archive, path)
            _check_byte_order(archive, prefix, path)
            reader = _StorageReader(archive, prefix, path)
            root = restricted_loads(archive.read(f"{prefix}data.pkl"), frozenset(), source=str(path),
                                    substitute=_substitute(path), persistent=reader.load)
    except (zipfile.BadZipFile, OSError) as exc:
        raise UnreadableFileError(f"{path}: not a readable TorchScript archive ({exc})") from exc
    if not isinstance(root, ScriptModuleState):
        raise UnreadableFileError(f"{path}: data.pkl does not hold a TorchScript module (got {type(root).__name__})")
    state: dict[str, torch.Tensor] = {}
    _collect(root, "", state, set())
    if not state:
        raise UnreadableFileError(f"{path}: the TorchScript module holds no tensors")
    return state


def _archive_prefix(archive: zipfile.ZipFile, path: Path) -> str:
    """The archive's top folder with a trailing slash (``ViT-B-16/``), the one holding ``data.pkl``."""
    pickles = sorted(n for n in archive.namelist() if n.count("/") == 1 and n.endswith("/data.pkl"))
    if len(pickles) != 1:
        raise UnreadableFileError(f"{path}: expected one <folder>/data.pkl in the archive, found {len(pickles)}")
    return pickles[0][: -len("data.pkl")]


def _check_byte_order(archive: zipfile.ZipFile, prefix: str, path: Path) -> None:
    """Refuse big-endian archives (storages are read as little-endian bytes); older archives name no order."""
    name = f"{prefix}byteorder"
    if name in archive.namelist() and archive.read(name).strip() not in (b"", b"little"):
        raise UnreadableFileError(f"{path}: storages are {archive.read(name).strip().decode(errors='replace')}-endian;"
                                  " only little-endian archives are supported")


def _substitute(path: Path):
    """The stand-ins for the globals a TorchScript ``data.pkl`` may name; None (refused) for any other."""

    def substitute(module: str, name: str) -> Any:
        if module == "__torch__" or module.startswith("__torch__."):
            return type(name, (ScriptModuleState,), {"qualified_name": f"{module}.{name}"})
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _tensor_view(path)
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if module == "torch.jit._pickle" and name in _PASS_THROUGH:
            return _first_argument
        return None

    return substitute


def _first_argument(value: Any, *_: Any) -> Any:
    """Stand-in for TorchScript's container helpers: the container itself, its type tag dropped."""
    return value


class _StorageReader:
    """Resolves ``('storage', type, key, location, numel)`` persistent ids to 1-D tensors read from ``data/<key>``."""

    def __init__(self, archive: zipfile.ZipFile, prefix: str, path: Path) -> None:
        self._archive, self._prefix, self._path = archive, prefix, path
        self._loaded: dict[str, torch.Tensor] = {}

    def load(self, pid: Any) -> torch.Tensor:
        """Return the storage named by ``pid`` (read once per key), checking its size against the file."""
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"
                and isinstance(pid[1], _StorageType) and isinstance(pid[2], str) and isinstance(pid[4], int)):
            raise UnreadableFileError(f"{self._path}: unexpected persistent id {pid!r} in data.pkl")
        _, kind, key, _, numel = pid
        if key not in self._loaded:
            self._loaded[key] = self._read(key, kind.dtype, numel)
        return self._loaded[key]

    def _read(self, key: str, dtype: torch.dtype, numel: int) -> torch.Tensor:
        name = f"{self._prefix}data/{key}"
        try:
            raw = self._archive.read(name)
        except KeyError:
            raise UnreadableFileError(f"{self._path}: storage {name} is missing from the archive") from None
        size = torch.empty((), dtype=dtype).element_size()
        if numel < 0 or len(raw) < numel * size:
            raise UnreadableFileError(f"{self._path}: storage {name} holds {len(raw)} bytes, "
                                      f"{numel} x {dtype} need {numel * size}")
        if numel == 0:
            return torch.empty(0, dtype=dtype)
        return torch.frombuffer(bytearray(raw), dtype=dtype, count=numel)


def _tensor_view(path: Path):
    """``_rebuild_tensor_v2`` as a bounds-checked strided view of an already-read storage."""

    def rebuild(storage: Any, offset: Any, size: Any, stride: Any, *_: Any) -> torch.Tensor:
        if not isinstance(storage, torch.Tensor) or not _ints(offset, *size, *stride) or len(size) != len(stride):
            raise UnreadableFileError(f"{path}: malformed tensor record in data.pkl")
        last = offset + sum((n - 1) * s for n, s in zip(size, stride)) if math.prod(size) else offset - 1
        if offset < 0 or min(stride, default=0) < 0 or last >= storage.numel():
            raise UnreadableFileError(f"{path}: a tensor of size {tuple(size)} reaches past its storage "
                                      f"of {storage.numel()} elements")
        return storage.as_strided(tuple(size), tuple(stride), offset)

    return rebuild


def _ints(*values: Any) -> bool:
    """Whether every value is a plain integer (not a bool, not anything a crafted pickle built)."""
    return all(isinstance(v, int) and not isinstance(v, bool) for v in values)


def _collect(module: ScriptModuleState, prefix: str, state: dict[str, torch.Tensor], seen: set[int]) -> None:
    """Add every tensor attribute of ``module`` and its child modules to ``state`` under its dotted path."""
    if id(module) in seen:
        return
    seen.add(id(module))
    for name, value in getattr(module, "attributes", {}).items():
        if not isinstance(name, str):
            continue
        if isinstance(value, torch.Tensor):
            state[f"{prefix}{name}"] = value
        elif isinstance(value, ScriptModuleState):
            _collect(value, f"{prefix}{name}.", state, seen)
