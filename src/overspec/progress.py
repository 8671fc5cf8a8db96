"""Progress bars that show on a terminal only: a log file or a pipe gets no carriage returns or escape sequences."""

from __future__ import annotations

__all__ = ["bar_disabled"]


def bar_disabled(enabled: bool) -> bool | None:
    """tqdm's ``disable`` for a bar the user asked for (``enabled``): None lets tqdm hide it when its stream is not
    a terminal; True hides it always."""
    return None if enabled else True
