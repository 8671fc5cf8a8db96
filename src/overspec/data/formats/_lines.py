"""Text files read a block of whole lines at a time.

A multi-million-line meta file (IJB-C: 469k face lines, 15.6M pair lines) is never one string, one list of lines or
one list of fields: a parser sees a few MiB of lines, keeps only their compact result (integer arrays, the names it
must keep) and drops the rest before the next block, so its transient memory is bounded by the block.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

__all__ = ["line_blocks", "text_line_blocks", "count_lines"]

#: Bytes read per block (whole lines: a block is cut after its last newline).
BLOCK_BYTES = 1 << 22


def line_blocks(path: Path, block_bytes: int = BLOCK_BYTES) -> Iterator[bytes]:
    """Yield the bytes of ``path`` in blocks that each end with a newline, except the last when the file does not.

    Concatenated, the blocks are the file; a line longer than ``block_bytes`` stays whole in one larger block.
    """
    with path.open("rb") as handle:
        rest = b""
        while data := handle.read(block_bytes):
            text = rest + data
            cut = text.rfind(b"\n") + 1
            rest = text[cut:]
            if cut:
                yield text[:cut]
        if rest:
            yield rest


def text_line_blocks(path: Path, block_bytes: int = BLOCK_BYTES) -> Iterator[list[str]]:
    """Yield the non-blank lines of a UTF-8 text file a block at a time (line ends as ``str.splitlines`` sees them)."""
    for block in line_blocks(path, block_bytes):
        lines = [line for line in block.decode("utf-8").splitlines() if line.strip()]
        if lines:
            yield lines


def count_lines(path: Path, block_bytes: int = 1 << 24) -> int:
    """Number of lines of ``path``: its newlines, plus one when it ends in a line without one."""
    count, last = 0, b"\n"
    with path.open("rb") as handle:
        while data := handle.read(block_bytes):
            count += data.count(b"\n")
            last = data[-1:]
    return count + (last != b"\n")
