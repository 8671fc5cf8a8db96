"""The Markdown summary of a run: one table per protocol, models as rows, datasets as columns, plus the mean."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from overspec.results.records import Record

__all__ = ["summary_markdown", "protocol_table", "biometric_table", "BIOMETRIC_HEADLINES"]

GENERAL_PROTOCOLS = ("zero_shot", "linear_probe")
# protocol -> (metric shown in the summary, column label, higher is better)
BIOMETRIC_HEADLINES = {
    "verification": ("accuracy", "acc", True),
    "ijb": ("tar_at_far_0.0001", "TAR@FAR=1e-4", True),
    "mad/own_head": ("d_eer", "D-EER own head", False),
    "mad/probe": ("d_eer", "D-EER probe", False),
    "mad/zero_shot": ("d_eer", "D-EER zero-shot", False),
    "pad/own_head": ("hter_test_eer", "HTER own head", False),
    "pad/probe": ("hter_test_eer", "HTER probe", False),
    "pad/zero_shot": ("hter_test_eer", "HTER zero-shot", False),
}


def protocol_table(records: Sequence[Record], protocol: str, models: Sequence[str], datasets: Sequence[str],
                   metric: str = "acc1") -> tuple[list[str], list[list[str]]]:
    """Return (header, rows) of ``metric`` in percent for ``protocol``; missing cells are '–', Avg over present."""
    cells = {(r.model, r.dataset): r.value for r in records if r.protocol == protocol and r.metric == metric}
    used = [d for d in datasets if any((m, d) in cells for m in models)]
    header = ["model", *used, "Avg"]
    rows = []
    for model in models:
        values = [cells.get((model, d)) for d in used]
        present = [v for v in values if v is not None]
        mean = f"{100 * float(np.mean(present)):.2f}" if len(present) == len(used) and present else "–"
        rows.append([model, *(f"{100 * v:.2f}" if v is not None else "–" for v in values), mean])
    return header, rows


def biometric_table(records: Sequence[Record], models: Sequence[str]) -> tuple[list[str], list[list[str]]]:
    """Return (header, rows) of each biometric benchmark's headline metric in percent (↑/↓ marks the direction)."""
    columns = []
    for r in records:
        if r.protocol in BIOMETRIC_HEADLINES and r.metric == BIOMETRIC_HEADLINES[r.protocol][0]:
            if (r.dataset, r.protocol) not in columns:
                columns.append((r.dataset, r.protocol))
    cells = {(r.model, r.dataset, r.protocol): r.value for r in records
             if r.protocol in BIOMETRIC_HEADLINES and r.metric == BIOMETRIC_HEADLINES[r.protocol][0]}
    header = ["model"] + [f"{d} {BIOMETRIC_HEADLINES[p][1]} {'↑' if BIOMETRIC_HEADLINES[p][2] else '↓'}"
                          for d, p in columns]
    rows = [[m] + [f"{100 * cells[(m, d, p)]:.2f}" if (m, d, p) in cells else "–" for d, p in columns]
            for m in models]
    return header, rows


def _markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def summary_markdown(records: Sequence[Record], models: Sequence[str], datasets: Sequence[str], *,
                     skipped: Sequence[tuple[str, str]] = ()) -> str:
    """Return the run summary: a top-1 accuracy (%) table per protocol, then the units that did not apply."""
    parts = ["# overspec run summary", ""]
    protocols = sorted({r.protocol for r in records if r.protocol.startswith(GENERAL_PROTOCOLS)},
                       key=lambda p: (p != "zero_shot", p))
    for protocol in protocols:
        header, rows = protocol_table(records, protocol, models, datasets)
        parts += [f"## {protocol.replace('_', ' ')} — top-1 accuracy (%)", "", _markdown(header, rows), ""]
    header, rows = biometric_table(records, models)
    if len(header) > 1:
        parts += ["## biometric benchmarks (%)", "", _markdown(header, rows), ""]
    if skipped:
        parts += ["## Not applicable", ""] + [f"- `{unit}`: {why}" for unit, why in skipped] + [""]
    return "\n".join(parts)
