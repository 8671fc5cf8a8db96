"""Atomic, checksummed array files: ``<key>.npy`` (memory-mappable) + ``<key>.json`` (shape, dtype, sha256).

The JSON is written last, so its presence means the array is complete; a truncated or altered array is detected
on read by its checksum and reported, never used.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np

from overspec.files import atomic_write_array, atomic_write_text

logger = logging.getLogger(__name__)

__all__ = ["write_array", "read_array", "read_entry", "discard", "CorruptCacheError"]


class CorruptCacheError(RuntimeError):
    """A cached file does not match its header (shape, dtype or checksum)."""


def _sha256(array: np.ndarray) -> str:
    h = hashlib.sha256()
    flat = np.ascontiguousarray(array).reshape(-1).view(np.uint8)
    step = 1 << 26
    for start in range(0, flat.shape[0], step):
        h.update(flat[start:start + step])
    return h.hexdigest()


def write_array(path: Path, array: np.ndarray, meta: dict) -> None:
    """Store ``array`` at ``path`` (``.npy``) with a JSON header beside it, both atomically."""
    atomic_write_array(path, array)
    header = {**meta, "shape": list(array.shape), "dtype": str(array.dtype), "sha256": _sha256(array)}
    atomic_write_text(path.with_suffix(".json"), json.dumps(header, indent=1, sort_keys=True))


def read_array(path: Path, *, verify: bool = True) -> np.ndarray | None:
    """Return the memory-mapped array at ``path``, ``None`` if absent, or raise :class:`CorruptCacheError`."""
    entry = read_entry(path, verify=verify)
    return None if entry is None else entry[0]


def read_entry(path: Path, *, verify: bool = True) -> tuple[np.ndarray, dict] | None:
    """Return the memory-mapped array at ``path`` and its JSON header, ``None`` if absent, or raise
    :class:`CorruptCacheError`."""
    header_path = path.with_suffix(".json")
    if not header_path.is_file() or not path.is_file():
        return None
    try:
        header = json.loads(header_path.read_text())
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, json.JSONDecodeError) as exc:
        raise CorruptCacheError(f"{path}: unreadable cache entry ({exc})") from None
    if not isinstance(header, dict):
        raise CorruptCacheError(f"{path}: its header is not a JSON object")
    if list(array.shape) != header.get("shape") or str(array.dtype) != header.get("dtype"):
        raise CorruptCacheError(f"{path}: shape/dtype {array.shape}/{array.dtype} differ from its header")
    if verify and _sha256(array) != header.get("sha256"):
        raise CorruptCacheError(f"{path}: checksum mismatch (file altered or truncated)")
    return array, header


def discard(path: Path) -> None:
    """Remove a cache entry (array and header), ignoring missing files."""
    for p in (path.with_suffix(".json"), path):
        p.unlink(missing_ok=True)
