"""Content checks of generated world files (datasets, biometric world, tiny-CLIP weights), made once per run.

Each completion check re-hashes what was generated, so that an edited or truncated file is regenerated rather than
used. One run asks the same question many times (every ``world:`` model and every fine-tune checks the world
again); inside :func:`checked_once` a content that matched its recorded hash is not hashed again until the block
ends. Outside such a block every check hashes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from pathlib import Path

__all__ = ["checked_once", "content_matches"]

_MATCHED: ContextVar[set[tuple[str, str]] | None] = ContextVar("overspec_world_matched", default=None)


@contextlib.contextmanager
def checked_once() -> Iterator[None]:
    """Within this block, remember every (path, hash) that matched, so it is hashed once (one run's checks)."""
    token = _MATCHED.set(set())
    try:
        yield
    finally:
        _MATCHED.reset(token)


def content_matches(path: Path, expected: str | None, digest: Callable[[Path], str]) -> bool:
    """Whether ``digest(path) == expected`` (False when nothing is recorded); remembered inside :func:`checked_once`."""
    if not expected:
        return False
    matched = _MATCHED.get()
    key = (str(Path(path).resolve()), expected)
    if matched is not None and key in matched:
        return True
    if digest(path) != expected:
        return False
    if matched is not None:
        matched.add(key)
    return True
