"""The ground floor for files: atomic writes, file and content hashing, one fingerprint convention.

Every file overspec writes goes through here. A write lands in a hidden temporary file (or folder) beside its
target, is flushed to disk, then renamed over it: a reader sees the old content or the new, never half of one,
and a write that fails removes its temporary file, so nothing half-written survives in-process. A run killed
mid-write leaves at most a hidden ``.<name>.<pid>.<random>.tmp`` behind, which :func:`remove_stale_temporaries`
clears.

Fingerprints (of weights, splits, units) are 32-hex-digit blake2b digests (:func:`combine`); checksums of whole
files are sha256 (:func:`file_sha256`), as recorded beside unit files, checkpoints and weights.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np

__all__ = ["atomic_write_bytes", "atomic_write_text", "atomic_write_array", "atomic_folder", "file_sha256",
           "bytes_sha256", "combine", "remove_stale_temporaries", "temporary_name"]

_TMP_SUFFIX = ".tmp"


def temporary_name(path: Path) -> Path:
    """A hidden sibling of ``path`` unique to this process and call, for a write that is renamed over ``path``."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}{_TMP_SUFFIX}")


@contextlib.contextmanager
def _replacing(path: Path) -> Iterator[Path]:
    """Yield a temporary file path; on success rename it over ``path``, on any failure remove it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as exc:
        if exc.filename in (None, str(tmp)):  # a full disk, or the target is a folder: name the file being written
            raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc
        raise
    finally:
        tmp.unlink(missing_ok=True)


def _synced_write(tmp: Path, write) -> None:
    with open(tmp, "xb") as handle:
        write(handle)
        handle.flush()
        os.fsync(handle.fileno())


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically, creating its folder if needed."""
    with _replacing(path) as tmp:
        _synced_write(tmp, lambda handle: handle.write(data))


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8, newlines as given) to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_array(path: Path, array: np.ndarray) -> None:
    """Write ``array`` to ``path`` as a ``.npy`` file (no pickles) atomically."""
    array = np.ascontiguousarray(array)
    with _replacing(path) as tmp:
        _synced_write(tmp, lambda handle: np.save(handle, array, allow_pickle=False))


@contextlib.contextmanager
def atomic_folder(path: Path) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``path``; on success swap it in whole for ``path``.

    Whatever was at ``path`` is replaced only once the block has finished; on any failure the temporary folder is
    removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path)
    tmp.mkdir()
    try:
        yield tmp
        if path.is_dir() and not path.is_symlink():
            old = temporary_name(path)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            if path.exists() or path.is_symlink():
                path.unlink()
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def remove_stale_temporaries(folder: Path, name: str = "") -> int:
    """Remove the temporary files and folders that killed writes left directly in ``folder`` (with ``name``, only
    those of writes to ``folder / name``, so a lock held on that one target suffices); return how many."""
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    removed = 0
    for entry in folder.glob(f".{name}.*{_TMP_SUFFIX}" if name else f".*{_TMP_SUFFIX}"):
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed += 1
    return removed


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file's bytes (the checksum recorded beside unit files, checkpoints and weights)."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def bytes_sha256(data: bytes) -> str:
    """Hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def combine(*parts: str) -> str:
    """Fold several fingerprints (weights, preprocessing, split content, settings...) into one 32-hex digest."""
    return hashlib.blake2b("|".join(parts).encode(), digest_size=16).hexdigest()
