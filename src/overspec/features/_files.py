"""Atomic, checksummed array files: ``<key>.npy`` (memory-mappable) + ``<key>.json`` (shape, dtype, sha256).

The JSON is written last, so its presence means the array is complete; a truncated or altered array is detected
on read by its checksum and reported, never used. Reading verifies the checksum from the file with plain reads, not
through the mapping, so a verified entry costs no resident memory until its rows are used; :func:`row_blocks`
streams the rows of a mapped entry the same way.
"""

from __future__ import annotations

import hashlib
import json
import logging
import mmap
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from overspec.files import atomic_write_array, atomic_write_text

logger = logging.getLogger(__name__)

__all__ = ["write_array", "read_array", "read_entry", "discard", "row_blocks", "CorruptCacheError"]

#: Bytes hashed or read per step when going through a stored file.
_STEP = 1 << 26


class CorruptCacheError(RuntimeError):
    """A cached file does not match its header (shape, dtype or checksum)."""


def _sha256(array: np.ndarray) -> str:
    h = hashlib.sha256()
    flat = np.ascontiguousarray(array).reshape(-1).view(np.uint8)
    for start in range(0, flat.shape[0], _STEP):
        h.update(flat[start:start + _STEP])
    return h.hexdigest()


def _mapped_file(array: np.ndarray) -> tuple[str, int] | None:
    """``(file, data offset)`` when ``array`` is a whole memory-mapped ``.npy`` file (not a view of one), else None."""
    if isinstance(array, np.memmap) and isinstance(array.base, mmap.mmap) and array.flags.c_contiguous:
        return str(array.filename), int(array.offset)
    return None


def _data_sha256(array: np.ndarray) -> str:
    """The checksum :func:`_sha256` gives, read from the file behind a mapped array so no page stays resident."""
    mapped = _mapped_file(array)
    if mapped is None:
        return _sha256(array)
    h, left = hashlib.sha256(), array.nbytes
    with open(mapped[0], "rb") as handle:
        handle.seek(mapped[1])
        while left > 0:
            chunk = handle.read(min(_STEP, left))
            if not chunk:
                break
            h.update(chunk)
            left -= len(chunk)
    return h.hexdigest()


def row_blocks(array: np.ndarray, block_rows: int) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(first row, in-memory copy of the next block_rows rows)`` of ``array`` in order.

    A whole memory-mapped file is read with plain file reads, so memory stays one block however large the file
    (reading through the mapping would leave every page touched resident); any other array is sliced.
    """
    mapped = _mapped_file(array)
    row_bytes = int(np.prod(array.shape[1:], dtype=np.int64)) * array.dtype.itemsize
    if mapped is None:
        for start in range(0, array.shape[0], block_rows):
            yield start, np.asarray(array[start:start + block_rows])
        return
    with open(mapped[0], "rb") as handle:
        for start in range(0, array.shape[0], block_rows):
            rows = min(block_rows, array.shape[0] - start)
            block = np.empty((rows, *array.shape[1:]), dtype=array.dtype)
            handle.seek(mapped[1] + start * row_bytes)
            if handle.readinto(block.reshape(-1).view(np.uint8)) != block.nbytes:
                raise CorruptCacheError(f"{mapped[0]}: file shorter than its {array.shape} array")
            yield start, block


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
    if verify and _data_sha256(array) != header.get("sha256"):
        raise CorruptCacheError(f"{path}: checksum mismatch (file altered or truncated)")
    return array, header


def discard(path: Path) -> None:
    """Remove a cache entry (array and header), ignoring missing files."""
    for p in (path.with_suffix(".json"), path):
        p.unlink(missing_ok=True)
