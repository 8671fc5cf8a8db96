"""The study's three findings, re-evaluated on a run's own numbers with bootstrap intervals.

1. Every fine-tune loses general ability: GELO < 1.
2. The face-recognition fine-tune (multi-class margin head) loses more than the binary MAD/PAD fine-tunes of the
   same base: GELO(MAD or PAD) > GELO(FR).
3. The larger base keeps more: for the same specialisation, GELO on the larger base > GELO on the smaller one.

Each claim is reduced to margins that must be > 0 (e.g. 1 − GELO). Verdict: *holds* when every margin's interval
lies above 0, *does not hold* when some margin's interval lies at or below 0, *inconclusive* otherwise or when
nothing can be compared. Without stored predictions the interval is the point estimate (the evidence says so).

"Larger" means more parameters. Size comes, in this order, from an explicit ``size_order`` (base name -> rank,
e.g. from ``overspec report --size-order``), the ``parameters`` count in ``provenance.json``'s ``models``
entries, or their ``size`` rank; bases are compared only when all of them have a size from the same source.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from overspec.report.stats import GeneralBootstrap
from overspec.report.tables import GeneralTable

__all__ = ["FINDING_KEYS", "HOLDS", "DOES_NOT_HOLD", "INCONCLUSIVE", "Comparison", "Finding", "base_sizes",
           "evaluate_findings", "verdict_of"]

HOLDS, DOES_NOT_HOLD, INCONCLUSIVE = "holds", "does not hold", "inconclusive"
FINDING_KEYS = ("gelo_below_one", "fr_loses_most", "larger_base_keeps_more")
BINARY_SPECIALISATIONS = ("mad", "pad")


@dataclass(frozen=True)
class Comparison:
    """One piece of evidence: an estimate with its interval, and the margin (claim holds when margin > 0)."""

    protocol: str
    label: str
    estimate: float
    interval: tuple[float, float] | None
    margin: float
    margin_interval: tuple[float, float]

    def text(self) -> str:
        """One line of evidence, e.g. ``zero_shot: GELO(fr-b) = 0.688 [0.671, 0.704]``."""
        ci = f"[{self.interval[0]:.3f}, {self.interval[1]:.3f}]" if self.interval else "(point estimate only)"
        return f"{self.protocol}: {self.label} = {self.estimate:.3f} {ci}"


@dataclass
class Finding:
    """A claim of the study, its verdict on this run and the comparisons behind it."""

    key: str
    claim: str
    verdict: str
    comparisons: list[Comparison] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        """JSON-ready form (for ``findings.json``)."""
        return {"key": self.key, "claim": self.claim, "verdict": self.verdict, "notes": self.notes,
                "evidence": [{"protocol": c.protocol, "label": c.label, "estimate": c.estimate,
                              "interval": list(c.interval) if c.interval else None, "margin": c.margin,
                              "margin_interval": list(c.margin_interval)} for c in self.comparisons]}


def verdict_of(margin_intervals: Sequence[tuple[float, float]]) -> str:
    """Holds if every interval is above 0, does not hold if any is at or below 0, else inconclusive."""
    if not margin_intervals:
        return INCONCLUSIVE
    if any(high <= 0 for _, high in margin_intervals):
        return DOES_NOT_HOLD
    if all(low > 0 for low, _ in margin_intervals):
        return HOLDS
    return INCONCLUSIVE


def _gelo_replicates(table: GeneralTable, boot: GeneralBootstrap | None, variant: str) -> np.ndarray | None:
    if boot is None:
        return None
    return boot.gelo(variant, table.bases[variant], table.datasets)


def _interval(boot: GeneralBootstrap | None, replicates: np.ndarray | None) -> tuple[float, float] | None:
    return None if boot is None else boot.interval(replicates)


def _comparison(protocol: str, label: str, estimate: float, margin: float, boot, replicates,
                margin_replicates) -> Comparison:
    interval = _interval(boot, replicates)
    margin_interval = _interval(boot, margin_replicates) or (margin, margin)
    return Comparison(protocol, label, estimate, interval, margin, margin_interval)


def _finding_gelo_below_one(tables, boots) -> Finding:
    comparisons = []
    for protocol, table in tables.items():
        for variant in table.variants():
            value = table.gelo(variant)
            reps = _gelo_replicates(table, boots.get(protocol), variant)
            comparisons.append(_comparison(protocol, f"GELO({variant})", value, 1 - value, boots.get(protocol),
                                           reps, None if reps is None else 1 - reps))
    finding = Finding(FINDING_KEYS[0], "every fine-tune has GELO < 1 (it lost general ability)",
                      verdict_of([c.margin_interval for c in comparisons]), comparisons)
    if not comparisons:
        finding.notes.append("no fine-tune whose base is in this run")
    return finding


def _specialisation(run, model: str) -> str:
    return run.models[model].specialisation if model in run.models else ""


def _finding_fr_loses_most(run, tables, boots) -> Finding:
    comparisons = []
    for protocol, table in tables.items():
        variants = table.variants()
        for fr in (v for v in variants if _specialisation(run, v) == "fr"):
            for other in variants:
                if _specialisation(run, other) not in BINARY_SPECIALISATIONS or table.bases[other] != table.bases[fr]:
                    continue
                margin = table.gelo(other) - table.gelo(fr)
                a, b = (_gelo_replicates(table, boots.get(protocol), v) for v in (other, fr))
                reps = None if a is None or b is None else a - b
                comparisons.append(_comparison(protocol, f"GELO({other}) − GELO({fr})", margin, margin,
                                               boots.get(protocol), reps, reps))
    finding = Finding(FINDING_KEYS[1], "the FR fine-tune loses more than the binary MAD/PAD fine-tunes "
                      "of the same base (higher GELO for MAD/PAD)",
                      verdict_of([c.margin_interval for c in comparisons]), comparisons)
    if not comparisons:
        finding.notes.append("no base with both an FR and a MAD/PAD fine-tune in this run")
    return finding


def base_sizes(run, size_order: Mapping[str, float] | None = None) -> tuple[dict[str, float], str]:
    """Return ({base: size}, source) for the bases of ``run``'s fine-tunes; empty dict when sizes are unknown."""
    bases = sorted({info.base for info in run.variants()})
    if size_order:
        known = {b: float(size_order[b]) for b in bases if b in size_order}
        return (known, "explicit size order") if len(known) == len(bases) else ({}, "")
    for attribute, source in (("parameters", "parameter count in provenance"), ("size", "size rank in provenance")):
        values = {b: getattr(run.models[b], attribute) for b in bases}
        if bases and all(v is not None for v in values.values()):
            return {b: float(v) for b, v in values.items()}, source
    return {}, ""


def _finding_larger_keeps_more(run, tables, boots, size_order) -> Finding:
    sizes, source = base_sizes(run, size_order)
    finding = Finding(FINDING_KEYS[2], "the larger base keeps more: for the same specialisation, GELO on the "
                      "larger base is higher", INCONCLUSIVE)
    if not sizes:
        finding.notes.append("base sizes unknown: record 'parameters' in provenance or pass a size order "
                             "(overspec report --size-order SMALL,LARGE)")
        return finding
    finding.notes.append(f"size from the {source}: " + ", ".join(f"{b}={s:g}" for b, s in sizes.items()))
    for protocol, table in tables.items():
        variants = [v for v in table.variants() if table.bases[v] in sizes]
        for small in variants:
            for large in variants:
                spec = _specialisation(run, small)
                if not spec or _specialisation(run, large) != spec:
                    continue
                if sizes[table.bases[large]] <= sizes[table.bases[small]]:
                    continue
                margin = table.gelo(large) - table.gelo(small)
                a, b = (_gelo_replicates(table, boots.get(protocol), v) for v in (large, small))
                reps = None if a is None or b is None else a - b
                comparisons = _comparison(protocol, f"GELO({large}) − GELO({small}) [{spec}]", margin, margin,
                                          boots.get(protocol), reps, reps)
                finding.comparisons.append(comparisons)
    finding.verdict = verdict_of([c.margin_interval for c in finding.comparisons])
    if not finding.comparisons:
        finding.notes.append("no specialisation fine-tuned on two bases of different size")
    return finding


def evaluate_findings(run, tables: Mapping[str, GeneralTable], boots: Mapping[str, GeneralBootstrap | None], *,
                      size_order: Mapping[str, float] | None = None) -> list[Finding]:
    """Evaluate the three findings on ``tables`` (protocol -> table) with their bootstraps (protocol -> or None)."""
    boots = dict(boots)
    return [_finding_gelo_below_one(tables, boots), _finding_fr_loses_most(run, tables, boots),
            _finding_larger_keeps_more(run, tables, boots, size_order)]
