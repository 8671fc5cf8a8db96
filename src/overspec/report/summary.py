"""The Markdown summary of a run: one table per general protocol unit (models as rows, datasets as columns, plus
the mean), the biometric headline table, and the units that did not apply. Sections come from the protocol
registry: each protocol's report section names its metric and, for biometric units, its headline column."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from overspec.protocols.base import GENERAL, reported_units, unregistered_units
from overspec.results.records import Record

__all__ = ["summary_markdown", "protocol_table", "biometric_table"]

METRIC_TITLES = {"acc1": "top-1 accuracy",
                 "main": "main metric: mean per-class recall where the catalog names it, else top-1"}


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
    headlines = {name: protocol.headline(name) for name, protocol in reported_units(r.protocol for r in records)
                 if GENERAL not in protocol.targets}
    headlines = {name: line for name, line in headlines.items() if line is not None}
    columns = []
    for r in records:
        if r.protocol in headlines and r.metric == headlines[r.protocol][0]:
            if (r.dataset, r.protocol) not in columns:
                columns.append((r.dataset, r.protocol))
    cells = {(r.model, r.dataset, r.protocol): r.value for r in records
             if r.protocol in headlines and r.metric == headlines[r.protocol][0]}
    header = ["model"] + [f"{d} {headlines[p][1]} {'↑' if headlines[p][2] else '↓'}" for d, p in columns]
    rows = [[m] + [f"{100 * cells[(m, d, p)]:.2f}" if (m, d, p) in cells else "–" for d, p in columns]
            for m in models]
    return header, rows


def _markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def summary_markdown(records: Sequence[Record], models: Sequence[str], datasets: Sequence[str], *,
                     skipped: Sequence[tuple[str, str]] = ()) -> str:
    """Return the run summary: a table per general protocol unit, the biometric headlines, then the units that
    did not apply and the protocols no registered entry reports."""
    parts = ["# overspec run summary", ""]
    for name, protocol in reported_units(r.protocol for r in records):
        if GENERAL not in protocol.targets:
            continue
        metric = protocol.report.metric
        header, rows = protocol_table(records, name, models, datasets, metric)
        title = METRIC_TITLES.get(metric, metric)
        parts += [f"## {name.replace('_', ' ')} — {title} (%)", "", _markdown(header, rows), ""]
    header, rows = biometric_table(records, models)
    if len(header) > 1:
        parts += ["## biometric benchmarks (%)", "", _markdown(header, rows), ""]
    unknown = unregistered_units(r.protocol for r in records)
    if unknown:
        parts += ["## Not reported", ""] + [f"- `{name}`: no registered protocol reports it (its records are in "
                                            "results.jsonl)" for name in unknown] + [""]
    if skipped:
        parts += ["## Not applicable", ""] + [f"- `{unit}`: {why}" for unit, why in skipped] + [""]
    return "\n".join(parts)
