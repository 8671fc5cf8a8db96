"""Content digests of dataset files, so that a split's fingerprint follows the bytes of its images, not their names.

Hashing every image on every run would cost seconds to minutes on large datasets, so each file's sha256 is
remembered under its stat stamp (size, mtime_ns, ctime_ns, inode): within this process, and across runs once
:func:`use_digest_cache` names a folder (the feature store names one inside the cache). Rewriting a file in place
changes its ctime, so an edited image is hashed again even when its size and mtime are kept; files changed in the
last two seconds are not remembered, since a second edit within one clock tick would keep the stamp.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from overspec.files import atomic_write_text, combine, file_sha256

__all__ = ["files_digest", "lazy_files_digest", "use_digest_cache"]

logger = logging.getLogger(__name__)

_Stamp = tuple[int, int, int, int]

#: A file changed this recently (ns) is never remembered: a second edit within one tick of the file system's
#: clock would keep its stamp (git's "racy clean" problem), so such files are hashed again next time.
_RACY_NS = 2_000_000_000

#: sha256 of each file seen in this process, by (absolute path, stamp).
_MEMO: dict[tuple[str, _Stamp], str] = {}
_state: dict[str, Path | None] = {"folder": None}


def use_digest_cache(folder: Path | None) -> None:
    """Remember file digests across runs in ``folder`` (``None``: only within this process)."""
    _state["folder"] = Path(folder) if folder is not None else None


def lazy_files_digest(paths: Sequence[Path | str]) -> Callable[[], str]:
    """A function returning :func:`files_digest` of ``paths``, computed on first call only."""
    return functools.cache(lambda: files_digest(paths))


def files_digest(paths: Sequence[Path | str]) -> str:
    """One digest of the bytes of ``paths``, in order (each file hashed only when its stat stamp changed)."""
    names = [os.path.abspath(p) for p in paths]
    table_path = _table_path(names)
    table = _read_table(table_path) if table_path is not None else {}
    digests, changed = [], False
    for name in names:
        digest, fresh = _digest(name, table)
        digests.append(digest)
        changed |= fresh
    if changed and table_path is not None:
        _write_table(table_path, table)
    return combine("files-v1", *digests)


def _digest(name: str, table: dict[str, list]) -> tuple[str, bool]:
    """The sha256 of file ``name`` and whether it had to be hashed (``table`` updated then)."""
    st = os.stat(name)
    stamp = (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
    digest = _MEMO.get((name, stamp))
    if digest is not None:
        return digest, False
    entry = table.get(name)
    if isinstance(entry, list) and len(entry) == 5 and tuple(entry[:4]) == stamp:
        _MEMO[(name, stamp)] = entry[4]
        return entry[4], False
    digest = file_sha256(Path(name))
    if time.time_ns() - max(st.st_mtime_ns, st.st_ctime_ns) > _RACY_NS:
        table[name] = [*stamp, digest]
        _MEMO[(name, stamp)] = digest
        return digest, True
    return digest, False


def _table_path(names: list[str]) -> Path | None:
    """Where the digests of files under the common folder of ``names`` persist (``None`` when not persisted)."""
    folder = _state["folder"]
    if folder is None or not names:
        return None
    common = os.path.commonpath(names) if len(names) > 1 else os.path.dirname(names[0])
    return folder / f"{combine('file-digests-v1', common)}.json"


def _read_table(path: Path) -> dict[str, list]:
    """The remembered digests at ``path`` (empty when absent or unreadable: files are then hashed again)."""
    try:
        table = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return table if isinstance(table, dict) else {}


def _write_table(path: Path, table: dict[str, list]) -> None:
    """Persist ``table``; a cache that cannot be written only costs hashing again next time."""
    try:
        atomic_write_text(path, json.dumps(table))
    except OSError as exc:
        logger.debug("file digests not remembered in %s: %s", path, exc)
