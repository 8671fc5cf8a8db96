"""Loading pickled files from strangers without running their code.

A pickle can name any importable callable and call it while loading (``os.system`` included), so every pickle
overspec reads goes through :func:`restricted_loads`, which resolves only globals named in an allow-list, or through
``torch.load(weights_only=True)`` for checkpoints. References: Python ``pickle`` docs, "Restricting Globals";
PyTorch ``torch.load`` ``weights_only``; biometric-protocols.md §2.1 for the ``.bin`` allow-list.
"""

from __future__ import annotations

import _compat_pickle
import functools
import importlib
import io
import logging
import pickle
import re
from collections.abc import Callable, Set
from pathlib import Path
from typing import Any
from overspec.errors import InputError

__all__ = [
    "SafeLoadError",
    "UnsafeFileError",
    "UnreadableFileError",
    "NUMPY_ARRAY_GLOBALS",
    "restricted_loads",
    "restricted_load_file",
    "load_torch_checkpoint",
    "torch_load_error",
    "state_dict_of",
    "check_float_parameters",
]

logger = logging.getLogger(__name__)

#: Globals that rebuild plain numpy arrays: the array reconstructor under numpy 1 and 2 names, ``ndarray``,
#: ``dtype``, ``_frombuffer`` (protocol-5 pickles written by numpy >= 1.16) and ``_codecs.encode`` (how
#: Python 3 stores ``bytes`` in protocol-2 pickles).
NUMPY_ARRAY_GLOBALS: frozenset[tuple[str, str]] = frozenset({
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
})

# numpy 2 moved ``numpy.core`` to ``numpy._core``; importing the old name warns, so resolve to the new one.
_NUMPY_MODULE_ALIASES = {"numpy.core.multiarray": "numpy._core.multiarray", "numpy.core.numeric": "numpy._core.numeric"}


class SafeLoadError(InputError):
    """A file could not be loaded safely; the message names the file."""


class UnsafeFileError(SafeLoadError):
    """A pickle asked for a global outside the allow-list; names the file and the refused global."""

    def __init__(self, source: str, global_name: str, detail: str = "") -> None:
        self.source, self.global_name = source, global_name
        extra = f" ({detail})" if detail else ""
        super().__init__(f"{source}: refused to load: the pickle references {global_name!r}, which is not allowed{extra}")


class UnreadableFileError(SafeLoadError):
    """A file is truncated, corrupt or not in the expected format; names the file."""


class _RestrictedUnpickler(pickle.Unpickler):
    """An unpickler whose ``find_class`` admits only the allow-listed ``(module, name)`` pairs."""

    def __init__(self, file: io.BytesIO, allowed: Set[tuple[str, str]], source: str, encoding: str,
                 substitute: Callable[[str, str], Any] | None = None,
                 persistent: Callable[[Any], Any] | None = None) -> None:
        super().__init__(file, encoding=encoding)
        self._allowed = allowed
        self._source = source
        self._substitute = substitute
        self._persistent = persistent

    def find_class(self, module: str, name: str) -> Any:
        module, name = _python3_names(module, name)
        replacement = self._substitute(module, name) if self._substitute else None
        if replacement is not None:
            return replacement
        if (module, name) not in self._allowed:
            raise UnsafeFileError(self._source, f"{module}.{name}")
        target = importlib.import_module(_NUMPY_MODULE_ALIASES.get(module, module))
        return functools.reduce(getattr, name.split("."), target)

    def persistent_load(self, pid: Any) -> Any:
        if self._persistent is not None:
            return self._persistent(pid)
        raise UnsafeFileError(self._source, "persistent id", f"persistent id {pid!r}")


def _python3_names(module: str, name: str) -> tuple[str, str]:
    """Map Python-2 module/global names (``__builtin__``, ``copy_reg``) to their Python-3 spellings.

    The mapping's keys exist only in Python 2, so applying it to every pickle changes nothing for Python-3 files.
    """
    if (module, name) in _compat_pickle.NAME_MAPPING:
        return _compat_pickle.NAME_MAPPING[(module, name)]
    return _compat_pickle.IMPORT_MAPPING.get(module, module), name


def restricted_loads(
    data: bytes, allowed: Set[tuple[str, str]], *, source: str = "<bytes>", encoding: str = "latin1",
    substitute: Callable[[str, str], Any] | None = None, persistent: Callable[[Any], Any] | None = None,
) -> Any:
    """Unpickle ``data`` resolving only the ``(module, name)`` globals in ``allowed``.

    ``encoding`` decodes Python-2 ``str`` payloads: ``latin1`` (the default) maps every byte to one character, so
    the original bytes are recovered with ``.encode("latin1")`` and numpy arrays from Python 2 load correctly.
    Raises :class:`UnsafeFileError` for a refused global and :class:`UnreadableFileError` for a broken pickle,
    both naming ``source``. ``substitute(module, name)`` may return a stand-in of the reader's own for a global
    (None: the allow-list decides); ``persistent(pid)`` resolves persistent ids (refused when not given).
    """
    unpickler = _RestrictedUnpickler(io.BytesIO(data), allowed, source, encoding, substitute, persistent)
    try:
        return unpickler.load()
    except SafeLoadError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError,
            UnicodeDecodeError, ImportError) as exc:
        raise UnreadableFileError(f"{source}: not a readable pickle ({type(exc).__name__}: {exc})") from exc


def restricted_load_file(path: str | Path, allowed: Set[tuple[str, str]], *, encoding: str = "latin1") -> Any:
    """Read ``path`` and unpickle it with :func:`restricted_loads` (errors name the file)."""
    path = Path(path)
    return restricted_loads(path.read_bytes(), allowed, source=str(path), encoding=encoding)


def load_torch_checkpoint(path: str | Path, *, map_location: str = "cpu") -> Any:
    """Load a checkpoint without executing code: safetensors for ``.safetensors``, the tensors of a TorchScript
    archive through :mod:`overspec.torchscript`, else ``torch.load`` with ``weights_only=True``; failures name the
    file."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        return _load_safetensors(path, map_location)
    from overspec.torchscript import is_torchscript_archive, read_torchscript_state_dict

    if is_torchscript_archive(path):
        return read_torchscript_state_dict(path)
    _check_not_misnamed(path)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError) as exc:
        raise torch_load_error(path, exc) from exc


def _check_not_misnamed(path: Path) -> None:
    """Refuse an empty file, or safetensors bytes under another suffix, saying what the file is."""
    with open(path, "rb") as handle:
        head = handle.read(10)
    if not head:
        raise UnreadableFileError(f"{path}: the file is empty (0 bytes); not a torch checkpoint")
    if len(head) == 10 and head[8:10] == b'{"':
        raise UnreadableFileError(f"{path}: this is a safetensors file, not a torch pickle; name it "
                                  f"{path.with_suffix('.safetensors').name} (a .safetensors suffix)")


def state_dict_of(checkpoint: Any, path: str | Path) -> dict[str, Any]:
    """The flat ``{name: tensor}`` mapping of a loaded checkpoint (unwrapping ``state_dict``), or an error naming
    ``path`` for anything else (a list, a bare tensor, non-tensor entries)."""
    import torch

    if isinstance(checkpoint, dict) and isinstance(checkpoint.get("state_dict"), dict):
        checkpoint = checkpoint["state_dict"]
    if not isinstance(checkpoint, dict):
        raise UnreadableFileError(f"{path}: holds a {type(checkpoint).__name__}, not a state dict "
                                  "(a mapping of parameter names to tensors)")
    not_tensors = sorted(str(k) for k, v in checkpoint.items() if not isinstance(v, torch.Tensor))
    if not_tensors:
        raise UnreadableFileError(f"{path}: entries that are not tensors: {not_tensors[:8]} (expected a state dict)")
    return {str(k).removeprefix("module."): v for k, v in checkpoint.items()}


def check_float_parameters(state: dict[str, Any], expected: dict[str, Any], path: str | Path) -> None:
    """Refuse a checkpoint storing a floating-point parameter of ``expected`` as integers (it would load, cast, and
    score at chance); names the key and both dtypes."""
    for key, tensor in state.items():
        target = expected.get(key)
        if target is not None and target.is_floating_point() and not tensor.is_floating_point():
            raise UnreadableFileError(f"{path}: {key} is stored as {str(tensor.dtype).removeprefix('torch.')} but "
                                      f"the model's parameter is {str(target.dtype).removeprefix('torch.')}; "
                                      "integer weights are refused (a quantised or damaged checkpoint?)")


def torch_load_error(path: str | Path, exc: BaseException) -> SafeLoadError:
    """The one-line error naming ``path`` for an exception of ``torch.load(path, weights_only=True)``.

    A refused global becomes :class:`UnsafeFileError`; anything else (truncated zip, not a checkpoint) becomes
    :class:`UnreadableFileError`. Loaders that call ``torch.load`` through a library (open_clip) use it too.
    """
    text = " ".join(str(exc).split())
    if isinstance(exc, pickle.UnpicklingError) and ("weights_only" in text or "GLOBAL" in text):
        return UnsafeFileError(str(path), _refused_torch_global(text), "torch.load weights_only")
    return UnreadableFileError(f"{path}: not a readable torch checkpoint ({type(exc).__name__}: {text[:300]})")


def _load_safetensors(path: Path, device: str) -> dict[str, Any]:
    """Return the tensors of a safetensors file, naming the file on failure."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device=device)
    except (SafetensorError, OSError, ValueError) as exc:
        raise UnreadableFileError(f"{path}: not a readable safetensors file ({exc})") from exc


def _refused_torch_global(message: str) -> str:
    """Extract the refused global from torch's weights-only error text (best effort)."""
    match = re.search(r"GLOBAL\s+([\w.]+)", message)
    return match.group(1).rstrip(".") if match else "a non-allow-listed global"
