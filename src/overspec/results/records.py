"""Tidy result records: one row per model × dataset × protocol × metric, with what is needed to trace it."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path

from overspec.files import atomic_write_text

__all__ = ["Record", "write_jsonl", "write_csv", "read_jsonl", "SCHEMA"]


@dataclass(frozen=True)
class Record:
    """One number of a run. ``extra`` holds protocol details (chosen C, prompt-set hash, k, seed, scoring method)."""

    run: str
    model: str
    model_fingerprint: str
    dataset: str
    split: str
    protocol: str
    metric: str
    value: float
    n: int
    config_hash: str
    split_fingerprint: str = ""
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """The record's fields by name, as they are (``asdict`` without its deep copy, which writing does not need
        and which dominates writing a study's few thousand records)."""
        return {name: getattr(self, name) for name in SCHEMA}

    def as_row(self) -> dict:
        """Flat dict for CSV (``extra`` serialised as sorted JSON)."""
        row = self.to_dict()
        row["extra"] = json.dumps(self.extra, sort_keys=True)
        return row


SCHEMA = {f.name: f.type for f in fields(Record)}


def write_jsonl(path: Path, records: Iterable[Record]) -> None:
    """Write records as JSON lines, atomically."""
    lines = [json.dumps(r.to_dict(), sort_keys=True) for r in records]
    atomic_write_text(Path(path), "\n".join(lines) + ("\n" if lines else ""))


def read_jsonl(path: Path) -> list[Record]:
    """Read records written by :func:`write_jsonl`."""
    out = []
    for line in Path(path).read_text().splitlines():
        if line.strip():
            out.append(Record(**json.loads(line)))
    return out


def write_csv(path: Path, records: Sequence[Record]) -> None:
    """Write records as CSV with a header, atomically."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(SCHEMA), lineterminator="\n")
    writer.writeheader()
    for record in records:
        writer.writerow(record.as_row())
    atomic_write_text(Path(path), buffer.getvalue())
