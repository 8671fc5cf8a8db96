"""The study's tables from stored records: general vision (average, GELO, per-dataset deltas) and biometrics.

GELO (Chettaoui et al., IJCB 2025) = mean over datasets of the fine-tune's accuracy ÷ the same mean for its base
under the same protocol: a ratio of averages, computed here from the unrounded per-dataset values.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from overspec.protocols.attack_detection import SCORING_METHODS
from overspec.protocols.base import GENERAL, ReportGroup, reported_units
from overspec.protocols.biometric import SCORING_LABELS

__all__ = ["BIO_SCORING_PREFERENCE", "MAIN", "SCORING_LABELS", "AttackSetTable", "BioCell", "BioColumn",
           "BiometricTable", "GeneralTable", "attack_set_tables", "biometric_table", "cka_profiles", "gelo",
           "general_protocols", "general_table", "mean_of", "most_moved_blocks"]

# the scoring shown when a model has several for one MAD/PAD benchmark (its own head first)
BIO_SCORING_PREFERENCE = SCORING_METHODS
#: The per-dataset main metric of the catalog, as a table's metric.
MAIN = "main"


def mean_of(values: Sequence[float]) -> float:
    """Plain mean of unrounded values (the study's "Avg")."""
    if len(values) == 0:
        raise ValueError("mean of no values")
    return float(np.mean(np.asarray(values, dtype=float)))


def gelo(variant_values: Sequence[float], base_values: Sequence[float]) -> float:
    """GELO = mean(variant) ÷ mean(base) over the same datasets (ratio of averages, not average of ratios).

    >>> round(gelo([0.5, 0.7], [0.8, 0.8]), 3)
    0.75
    """
    if len(variant_values) != len(base_values):
        raise ValueError(f"GELO needs the same datasets: {len(variant_values)} variant vs {len(base_values)} base")
    base_mean = mean_of(base_values)
    if base_mean == 0:
        raise ValueError("GELO is undefined when the base average is 0")
    return mean_of(variant_values) / base_mean


def general_protocols(records) -> list[str]:
    """General-vision accuracy units present in ``records``, in the registry's report order (zero-shot, linear probe,
    then k-shot probes by k, then other registered general protocols)."""
    return [name for name, protocol in reported_units(r.protocol for r in records)
            if GENERAL in protocol.targets and protocol.report.accuracy]


@dataclass
class GeneralTable:
    """One general protocol × metric: unrounded fractions per (model, dataset) and the datasets all models share."""

    protocol: str
    metric: str
    models: list[str]
    datasets: list[str]
    values: dict[tuple[str, str], float]
    bases: dict[str, str] = field(default_factory=dict)
    excluded: dict[str, list[str]] = field(default_factory=dict)

    def row(self, model: str) -> list[float]:
        """``model``'s values over the shared datasets, in column order."""
        return [self.values[(model, d)] for d in self.datasets]

    def average(self, model: str) -> float:
        """Mean over the shared datasets (the table's "Avg")."""
        return mean_of(self.row(model))

    def variants(self) -> list[str]:
        """Models of the table that are fine-tunes of another model of the table."""
        return [m for m in self.models if self.bases.get(m) in self.models]

    def gelo(self, variant: str) -> float:
        """GELO of ``variant`` against its base over the shared datasets."""
        return gelo(self.row(variant), self.row(self.bases[variant]))

    def delta(self, variant: str, dataset: str) -> float:
        """Variant − base value on ``dataset`` (a fraction; ×100 for percentage points)."""
        return self.values[(variant, dataset)] - self.values[(self.bases[variant], dataset)]


def general_table(run, protocol: str, metric: str = "acc1") -> GeneralTable | None:
    """Build the table of ``protocol``/``metric`` from ``run`` (a RunData); None when it has no such records.

    ``metric="main"`` takes each dataset's main metric from the catalog (mean per-class recall for FGVC Aircraft
    and Flowers102 in the study, top-1 elsewhere); such a table is labelled ``acc1`` when every main metric is top-1.

    Averages and GELO use only the datasets every model of the table has; the others are listed in ``excluded``
    with the models that lack them, so a missing cell can never shift an average silently.
    """
    if metric == MAIN:
        values = {(r.model, r.dataset): r.value for r in run.records
                  if r.protocol == protocol and r.metric == run.main_metric(r.dataset)}
        metric = MAIN if any(run.main_metric(d) != "acc1" for _, d in values) else "acc1"
    else:
        values = {(r.model, r.dataset): r.value for r in run.records if r.protocol == protocol and r.metric == metric}
    if not values:
        return None
    present = {m for m, _ in values}
    models = [m for m in run.model_names() if m in present]
    all_datasets = list(dict.fromkeys(d for _, d in values))
    shared = [d for d in all_datasets if all((m, d) in values for m in models)]
    excluded = {d: [m for m in models if (m, d) not in values] for d in all_datasets if d not in shared}
    bases = {name: info.base for name, info in run.models.items() if info.base}
    return GeneralTable(protocol, metric, models, shared, values, bases, excluded)


@dataclass(frozen=True)
class BioColumn:
    """One column of the biometric table: benchmark, task kind, metric and direction."""

    dataset: str
    kind: str
    metric: str
    label: str
    higher_is_better: bool


@dataclass(frozen=True)
class BioCell:
    """One biometric value (a fraction), for MAD/PAD the scoring method that produced it, and whether its operating
    point is reachable with the scores the benchmark has (a FAR of 1e-4 needs at least 10^4 impostor pairs)."""

    value: float
    scoring: str = ""
    reachable: bool = True


@dataclass
class BiometricTable:
    """The study's Table C layout: FR verification, IJB, PAD and MAD columns; MAD/PAD cells carry their scoring."""

    models: list[str]
    columns: list[BioColumn]
    cells: dict[tuple[str, int], BioCell]
    conventions: list[str] = field(default_factory=list)

    def cell(self, model: str, column: BioColumn) -> BioCell | None:
        """The cell of ``model`` in ``column`` (None when not measured)."""
        return self.cells.get((model, self.columns.index(column)))


def _task_of(protocol: str) -> tuple[str, str]:
    kind, _, scoring = protocol.partition("/")
    return kind, scoring


def biometric_table(run) -> BiometricTable:
    """Build the biometric table of ``run`` (a RunData): one cell per model and column, best scoring preferred.

    For MAD/PAD a model's cell comes from its own head when it has one, else a probe on frozen features, else
    zero-shot prompts, and is labelled with that scoring (the study's cross-task cells are otherwise ambiguous).
    """
    biometric = {name: protocol for name, protocol in reported_units(r.protocol for r in run.records)
                 if GENERAL not in protocol.targets}
    kinds = {_task_of(name)[0]: protocol for name, protocol in biometric.items()}
    by_key: dict[tuple[str, str, str, str, str], BioCell] = {}
    datasets: dict[str, list[str]] = {k: [] for k in kinds}
    for r in run.records:
        if r.protocol not in biometric:
            continue
        kind, scoring = _task_of(r.protocol)
        by_key[(r.model, r.dataset, kind, scoring, r.metric)] = BioCell(r.value, scoring,
                                                                       (r.extra or {}).get("reachable", True))
        if r.dataset not in datasets[kind]:
            datasets[kind].append(r.dataset)
    columns = []
    for kind, protocol in kinds.items():
        for dataset in datasets[kind]:
            for spec in protocol.columns(kind):
                metric = next((n for n in spec.metrics if any(k[1] == dataset and k[2] == kind and k[4] == n
                                                              for k in by_key)), None)
                if metric is not None:
                    columns.append(BioColumn(dataset, kind, metric, f"{dataset} {spec.label}", spec.higher_is_better))
    models = [m for m in run.model_names() if any(k[0] == m for k in by_key)]
    cells = {}
    for index, column in enumerate(columns):
        for model in models:
            cell = _pick_cell(by_key, model, column)
            if cell is not None:
                cells[(model, index)] = cell
    return BiometricTable(models, columns, cells, _conventions(run, columns))


def _pick_cell(by_key: dict, model: str, column: BioColumn) -> BioCell | None:
    for scoring in ("", *BIO_SCORING_PREFERENCE):
        cell = by_key.get((model, column.dataset, column.kind, scoring, column.metric))
        if cell is not None:
            return cell
    return None


def _conventions(run, columns: list[BioColumn]) -> list[str]:
    notes = []
    for column in columns:
        for r in run.records:
            if r.dataset == column.dataset and r.metric == column.metric and r.protocol.startswith(column.kind):
                convention = (r.extra or {}).get("convention")
                if convention:
                    text = f"{column.label}: {convention}"
                    if text not in notes:
                        notes.append(text)
                    break
    return notes


@dataclass
class AttackSetTable:
    """One biometric kind per attack set (Table C's MAD block): per model a row per (benchmark, attack type) and the
    average over every set of the run, computed from unrounded values; each model under one scoring."""

    kind: str
    groups: tuple[ReportGroup, ...]
    metrics: list[list[str]]
    models: list[str]
    sets: list[tuple[str, str]]
    scoring: dict[str, str]
    values: dict[tuple[str, tuple[str, str], str], float]
    conventions: list[str] = field(default_factory=list)

    def value(self, model: str, attack_set: tuple[str, str], metric: str) -> float | None:
        """``model``'s unrounded value of ``metric`` on one (benchmark, attack type) set, None when absent."""
        return self.values.get((model, attack_set, metric))

    def average(self, model: str, metric: str) -> float | None:
        """Mean of ``metric`` over every set of the table (the study's six-set average); None if one is missing."""
        values = [self.value(model, attack_set, metric) for attack_set in self.sets]
        return None if any(v is None for v in values) else mean_of(values)

    def set_label(self, attack_set: tuple[str, str]) -> str:
        """The attack type, prefixed with its benchmark when two benchmarks share that attack type's name."""
        benchmark, attack = attack_set
        shared = sum(a == attack for _, a in self.sets) > 1
        return f"{benchmark}/{attack}" if shared else attack


def _per_set_records(run, protocol_names: set[str], kind: str):
    """(record, attack type, metric without its ``[attack type]`` suffix) of ``kind``'s per-attack-set records."""
    for r in run.records:
        attack = (r.extra or {}).get("attack_type")
        if r.protocol in protocol_names and _task_of(r.protocol)[0] == kind and attack is not None \
                and r.metric.endswith(f"[{attack}]"):
            yield r, attack, r.metric[: -len(f"[{attack}]")]


def attack_set_tables(run) -> list[AttackSetTable]:
    """Build the per-attack-set table of every biometric kind whose protocol declares column groups for it."""
    biometric = {name: protocol for name, protocol in reported_units(r.protocol for r in run.records)
                 if GENERAL not in protocol.targets}
    kinds: dict[str, tuple[set[str], tuple[ReportGroup, ...]]] = {}
    for name, protocol in biometric.items():
        kind = _task_of(name)[0]
        if protocol.set_groups(kind):
            kinds.setdefault(kind, (set(), protocol.set_groups(kind)))[0].add(name)
    tables = [_attack_set_table(run, kind, names, groups) for kind, (names, groups) in kinds.items()]
    return [t for t in tables if t.sets]


def _attack_set_table(run, kind: str, names: set[str], groups: tuple[ReportGroup, ...]) -> AttackSetTable:
    """The per-attack-set table of one kind: each column's first present metric, each model's preferred scoring."""
    rows = list(_per_set_records(run, names, kind))
    by_key = {(r.model, _task_of(r.protocol)[1], (r.dataset, attack), metric): r for r, attack, metric in rows}
    present = {metric for *_, metric in by_key}
    chosen = [[next((m for m in column.metrics if m in present), column.metrics[0]) for column in group.columns]
              for group in groups]
    sets = list(dict.fromkeys(key[2] for key in by_key))
    scored = {(key[0], key[1]) for key in by_key}
    models = [m for m in run.model_names() if any(model == m for model, _ in scored)]
    scoring = {m: next(s for s in ("", *BIO_SCORING_PREFERENCE) if (m, s) in scored) for m in models}
    values = {(model, attack_set, metric): r.value for (model, s, attack_set, metric), r in by_key.items()
              if scoring.get(model) == s}
    notes = []
    for group, metrics in zip(groups, chosen, strict=True):
        convention = next(((r.extra or {}).get("convention") for (_, _, _, m), r in by_key.items() if m == metrics[0]),
                          None)
        if convention:
            notes.append(f"{group.label}: {convention}")
    return AttackSetTable(kind, groups, chosen, models, sets, scoring, values, notes)


def cka_profiles(run) -> dict[str, dict[str, list[float]]]:
    """Per fine-tune and dataset, linear CKA with its base at each visual block (from the ``cka`` records)."""
    blocks: dict[str, dict[str, dict[int, float]]] = {}
    for r in run.records:
        if r.protocol == "cka" and r.metric.startswith("cka[") and "block" in (r.extra or {}):
            blocks.setdefault(r.model, {}).setdefault(r.dataset, {})[int(r.extra["block"])] = r.value
    return {model: {dataset: [values[b] for b in sorted(values)] for dataset, values in datasets.items()}
            for model, datasets in blocks.items()}


def most_moved_blocks(profiles: Mapping[str, Sequence[float]], count: int = 2) -> list[tuple[int, float]]:
    """The ``count`` blocks with the lowest CKA averaged over datasets: (block, mean CKA), lowest first."""
    depth = min(len(values) for values in profiles.values())
    means = [float(np.mean([values[b] for values in profiles.values()])) for b in range(depth)]
    return sorted(enumerate(means), key=lambda pair: pair[1])[:count]
