"""The Markdown summary of a run: one table per general protocol unit (models as rows, datasets as columns, plus
the mean), the biometric headline table, and the units that did not apply. Sections come from the protocol
registry: each protocol's report section names its metric and, for biometric units, its headline column."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np

from overspec.protocols.base import GENERAL, protocol_of_unit, reported_units, unregistered_units
from overspec.protocols.biometric import SCORING_LABELS
from overspec.results.records import Record

__all__ = ["summary_markdown", "protocol_table", "biometric_tables"]

#: How a table shows an operating point the benchmark's scores cannot reach, and the note that explains it.
UNREACHABLE = "n/r"
UNREACHABLE_NOTE = ("n/r: operating point not reachable with this benchmark's scores (a FAR or APCER of x needs at least "
                    "1/x impostor or attack scores); no value is reported for it.")
METRIC_TITLES = {"acc1": "top-1 accuracy",
                 "main": "main metric: mean per-class recall where the catalog names it, else top-1"}


def protocol_table(records: Sequence[Record], protocol: str, models: Sequence[str], datasets: Sequence[str],
                   metric: str = "acc1", percent: bool = True) -> tuple[list[str], list[list[str]]]:
    """Return (header, rows) of ``metric`` for ``protocol`` (in percent, or as plain numbers to 3 decimals);
    missing cells are '–', Avg only over a full row; a model without any value has no row."""
    shown = (lambda v: f"{100 * v:.2f}") if percent else (lambda v: f"{v:.3f}")
    cells = {(r.model, r.dataset): r.value for r in records if r.protocol == protocol and r.metric == metric}
    used = [d for d in datasets if any((m, d) in cells for m in models)]
    header = ["model", *used, "Avg"]
    rows = []
    for model in models:
        values = [cells.get((model, d)) for d in used]
        present = [v for v in values if v is not None]
        if not present:
            continue
        mean = shown(float(np.mean(present))) if len(present) == len(used) else "–"
        rows.append([model, *(shown(v) if v is not None else "–" for v in values), mean])
    return header, rows


def biometric_tables(records: Sequence[Record], models: Sequence[str]) -> list[tuple[str, list[str], list[list[str]]]]:
    """One (title, header, rows) per biometric task in percent: benchmarks as columns, and for MAD / PAD one row per
    model and scoring, so each table stays narrow however many benchmarks a run has."""
    groups: dict[tuple[str, str], list[str]] = {}
    for name, protocol in reported_units(r.protocol for r in records):
        if GENERAL not in protocol.targets and protocol.headline(name) is not None:
            groups.setdefault((protocol.name, name.partition("/")[0]), []).append(name)
    tables = []
    for (_, kind), units in groups.items():
        protocol = protocol_of_unit(units[0])
        column = protocol.columns(kind)[0]
        metric = column.metrics[0]
        cells = {(r.model, r.protocol, r.dataset): r.value if (r.extra or {}).get("reachable", True) else None
                 for r in records if r.protocol in units and r.metric == metric}
        datasets = list(dict.fromkeys(d for _, _, d in cells))
        scored = len(units) > 1 or "/" in units[0]
        header = ["model", *(["scoring"] if scored else []), *datasets]
        rows = [[model, *([SCORING_LABELS[unit.partition("/")[2]]] if scored else []),
                 *(_cell(cells, (model, unit, d)) for d in datasets)]
                for model in models for unit in units if any((model, unit, d) in cells for d in datasets)]
        task = kind.upper() if len(protocol.targets) > 1 else protocol.report.title
        title = f"{task} — {column.label} (%) {'↑' if column.higher_is_better else '↓'}"
        tables.append((title, header, rows))
    return tables


def _cell(cells: dict, key: tuple) -> str:
    """A percentage, ``n/r`` for an unreachable operating point, or ``–`` when not measured."""
    if key not in cells:
        return "–"
    return UNREACHABLE if cells[key] is None else f"{100 * cells[key]:.2f}"


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
        metric, percent = protocol.report.metric, protocol.report.accuracy
        header, rows = protocol_table(records, name, models, datasets, metric, percent)
        title = f"{METRIC_TITLES.get(metric, metric)} (%)" if percent else protocol.report.title
        parts += [f"## {name.replace('_', ' ')} — {title}", "", _markdown(header, rows), ""]
    for title, header, rows in biometric_tables(records, models):
        parts += [f"## {title}", "", _markdown(header, rows), ""]
        if any(UNREACHABLE in row for row in rows):
            parts += [UNREACHABLE_NOTE, ""]
    unknown = unregistered_units(r.protocol for r in records)
    if unknown:
        parts += ["## Not reported", ""] + [f"- `{name}`: no registered protocol reports it (its records are in "
                                            "results.jsonl)" for name in unknown] + [""]
    if skipped:
        reasons = Counter(why for _, why in skipped)
        parts += ["## Not applicable", ""] + [f"- {why} ({count} unit{'s' * (count > 1)})"
                                              for why, count in reasons.items()] + [""]
    return "\n".join(parts)
