"""The one error class for what a user's input caused (a config value, a file, the data in it).

The command line prints an :class:`InputError` (and the file-system and registry errors) as one line naming the
file or key, exit status 2. Any other exception is a bug in overspec and is shown as one, with its traceback.
"""

from __future__ import annotations

__all__ = ["InputError"]


class InputError(ValueError):
    """A value, file or dataset a user gave overspec is wrong; the message names the file or key at fault."""
