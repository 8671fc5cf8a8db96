"""Move along the trade-off: each fine-tune's path in weight space from its base, and merged multi-task models.

For every fine-tune of a study, ``base + λ (fine-tune - base)`` for λ on a grid is a model of its own
(:mod:`overspec.models.arithmetic`); so is the sum of several fine-tunes of one base. The sweep evaluates them all
in one run beside the study's models, with one scoring for every point (attack detection by a probe on frozen
features, since a fine-tune's own head belongs to λ = 1 only) and no k-shot probes, then reads, per fine-tune and λ,
the own-task gain over the base (pp) against GELO (zero-shot and linear probe). The Pareto frontier is the set of λ
that no other λ beats on both; the chosen λ is the most specialised one whose every GELO is at least ``keep``.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from overspec.config.model import CombineTerm, ModelSpec
from overspec.config.run import RunConfig
from overspec.errors import InputError
from overspec.files import atomic_write_text
from overspec.report.build import task_gain
from overspec.report.rundata import RunData, load_run
from overspec.report.tables import biometric_table, general_table
from overspec.runner import run_study

__all__ = ["DEFAULT_LAMBDAS", "MergedRow", "SweepPoint", "SweepResult", "merged_specs", "run_sweep", "sweep_config",
           "sweep_specs"]

DEFAULT_LAMBDAS = tuple(round(0.1 * i, 1) for i in range(11))
GENERAL_PROTOCOLS = ("zero_shot", "linear_probe")
_TASKS = ("fr", "mad", "pad")


@dataclass(frozen=True)
class SweepPoint:
    """One fine-tune at strength λ: the model evaluated, its own-task gain over the base (pp) and its GELO per
    general protocol; ``pareto`` when no other λ of the same fine-tune is at least as good on all and better on one."""

    variant: str
    lam: float
    model: str
    gain_pp: float | None
    gelo: dict[str, float]
    pareto: bool = False


@dataclass(frozen=True)
class MergedRow:
    """A sum of fine-tunes of one base: the gain it keeps on each task it was tuned for and its GELO."""

    model: str
    base: str
    tasks: tuple[str, ...]
    gains_pp: dict[str, float | None]
    gelo: dict[str, float]


@dataclass
class SweepResult:
    """The sweep's points per fine-tune, the chosen λ per fine-tune (None: no λ > 0 keeps enough), merged rows."""

    run_dir: Path
    keep: float
    points: dict[str, list[SweepPoint]]
    chosen: dict[str, SweepPoint | None]
    merged: list[MergedRow]


def point_name(variant: str, lam: float) -> str:
    """The model name of ``variant`` at strength ``lam``."""
    return f"{variant}@{lam:g}"


def sweep_specs(specs: Sequence[ModelSpec], lambdas: Sequence[float]) -> list[ModelSpec]:
    """Return a combination spec per fine-tune of ``specs`` and λ strictly between 0 and 1 (0 is the base, 1 the
    fine-tune itself); each keeps the fine-tune's base, specialisation and preprocessing, without its head."""
    by_name = {spec.name: spec for spec in specs}
    out = []
    for variant in specs:
        base = by_name.get(variant.base or "")
        if base is None or variant.combine:
            continue
        for lam in lambdas:
            if 0 < lam < 1:
                out.append(dataclasses.replace(
                    base, name=point_name(variant.name, lam), base=base.name, specialisation=variant.specialisation,
                    preprocess=variant.preprocess, head=None, description=f"{variant.name} at strength {lam:g}",
                    reference="", combine=(CombineTerm(variant, lam),)))
    return out


def merged_specs(specs: Sequence[ModelSpec]) -> list[ModelSpec]:
    """Return, per base with fine-tunes for several tasks, the sum of every set of two or more of them (one per task)."""
    by_name = {spec.name: spec for spec in specs}
    out = []
    for base in specs:
        tuned = {}
        for spec in specs:
            if spec.base == base.name and spec.specialisation in _TASKS and not spec.combine:
                tuned.setdefault(spec.specialisation, spec)
        for size in range(2, len(tuned) + 1):
            for tasks in itertools.combinations([t for t in _TASKS if t in tuned], size):
                name = f"{base.name}-merged-{'+'.join(tasks)}"
                if name in by_name:
                    continue
                out.append(dataclasses.replace(
                    base, name=name, base="", specialisation="", head=None, reference="",
                    description=f"{base.name} plus the {' + '.join(tasks)} fine-tunes' changes",
                    combine=tuple(CombineTerm(tuned[task], 1.0) for task in tasks)))
    return out


def sweep_config(config: RunConfig, specs: Sequence[ModelSpec], lambdas: Sequence[float], merged: bool) -> RunConfig:
    """Return the sweep's run config: the study's models (fine-tunes as made), every λ point and merged model, one
    attack scoring (a probe on frozen features), no k-shot probes and no CKA; written to ``<name>-sweep``."""
    bad = [lam for lam in lambdas if not (math.isfinite(lam) and 0 <= lam <= 1)]
    if bad:
        raise InputError(f"sweep: λ values must lie in [0, 1], got {bad}")
    models = [*specs, *sweep_specs(specs, lambdas), *(merged_specs(specs) if merged else [])]
    protocols = {**config.protocols,
                 "linear_probe": {**config.protocols.get("linear_probe", {}), "kshot": []},
                 "attack": {**config.protocols.get("attack", {}), "scoring": ["probe"]},
                 "cka": {**config.protocols.get("cka", {}), "enabled": False}}
    finetune = dataclasses.replace(config.finetune, recipes=())
    return dataclasses.replace(config, name=f"{config.name}-sweep", models=tuple(models), protocols=protocols,
                               finetune=finetune)


def run_sweep(config: RunConfig, *, lambdas: Sequence[float] = DEFAULT_LAMBDAS, keep: float = 0.99,
              merged: bool = True) -> SweepResult:
    """Run the study (reusing what it finished), then its sweep; write ``sweep.md`` / ``sweep.csv`` / the frontier
    figure into the sweep run's folder and return the points."""
    if not 0 < keep <= 1:
        raise InputError(f"sweep: keep must be a share of general accuracy in (0, 1], got {keep}")
    study = run_study(config)
    variants = [spec for spec in study.models if spec.base and not spec.combine]
    if not variants:
        raise InputError(f"sweep: run {config.name!r} has no fine-tune with its base among the models "
                         "(name fine-tunes with `base:` or set finetune.recipes)")
    sweep = run_study(sweep_config(config, study.models, lambdas, merged))
    result = sweep_result(load_run(sweep.run_dir), [v.name for v in variants], lambdas, keep)
    write_sweep(result)
    return result


def sweep_result(run: RunData, variants: Sequence[str], lambdas: Sequence[float], keep: float) -> SweepResult:
    """Read the sweep's points, frontiers, chosen λ and merged rows from a finished sweep run."""
    tables = {p: t for p in GENERAL_PROTOCOLS if (t := general_table(run, p, "main")) is not None}
    bio = biometric_table(run)
    points, chosen = {}, {}
    for variant in variants:
        info = run.models[variant]
        line = []
        for lam in sorted(set(lambdas) | {0.0, 1.0}):
            model = info.base if lam == 0 else variant if lam == 1 else point_name(variant, lam)
            gain = 0.0 if lam == 0 else task_gain(bio, model, info.base, info.specialisation)
            gelo = {p: 1.0 if lam == 0 else _gelo(t, model, info.base) for p, t in tables.items()}
            line.append(SweepPoint(variant, lam, model, gain, {p: g for p, g in gelo.items() if g is not None}))
        points[variant] = _with_frontier(line)
        kept = [p for p in points[variant] if p.lam > 0 and p.gelo and all(g >= keep for g in p.gelo.values())]
        chosen[variant] = max(kept, key=lambda p: p.lam, default=None)
    merged = []
    for name, info in run.models.items():
        if "-merged-" not in name:
            continue
        base, tasks = name.split("-merged-", 1)
        merged.append(MergedRow(name, base, tuple(tasks.split("+")),
                                {t: task_gain(bio, name, base, t) for t in tasks.split("+")},
                                {p: g for p, t in tables.items() if (g := _gelo(t, name, base)) is not None}))
    return SweepResult(run.run_dir, keep, points, chosen, merged)


def _gelo(table, model: str, base: str) -> float | None:
    """GELO of ``model`` against ``base`` in a general table (None when either is missing)."""
    if model not in table.models or base not in table.models:
        return None
    return table.average(model) / table.average(base)


def _with_frontier(points: list[SweepPoint]) -> list[SweepPoint]:
    """Mark the points no other point dominates (own-task gain and every GELO at least as high, one higher)."""
    def scores(point: SweepPoint) -> tuple[float, ...] | None:
        if point.gain_pp is None or not point.gelo:
            return None
        return (point.gain_pp, *(point.gelo[p] for p in sorted(point.gelo)))

    measured = [scores(p) for p in points]

    def dominated(mine: tuple[float, ...]) -> bool:
        return any(other is not None and len(other) == len(mine) and other != mine
                   and all(o >= m for o, m in zip(other, mine)) for other in measured)

    return [dataclasses.replace(p, pareto=s is not None and not dominated(s)) for p, s in zip(points, measured)]


def sweep_markdown(result: SweepResult) -> str:
    """The sweep as Markdown: per fine-tune the λ table with its frontier, the chosen λ, then the merged models."""
    lines = ["# Moving along the trade-off", "",
             "Each fine-tune's image weights scaled from its base (λ = 0) to itself (λ = 1); own task = mean gain over "
             "the base on the fine-tune's own benchmarks (pp, attack detection scored by a probe on frozen features at "
             "every λ); GELO = general average ÷ the base's (each dataset's main metric). ★ = on the Pareto frontier.",
             ""]
    for variant, points in result.points.items():
        protocols = sorted({p for point in points for p in point.gelo})
        lines += [f"## {variant}", "", "| λ | own task (pp) | " + " | ".join(f"GELO {p}" for p in protocols) + " | |",
                  "|---|---|" + "---|" * len(protocols) + "---|"]
        for point in points:
            gain = "–" if point.gain_pp is None else f"{point.gain_pp:+.2f}"
            gelo = " | ".join(f"{point.gelo[p]:.3f}" if p in point.gelo else "–" for p in protocols)
            lines.append(f"| {point.lam:g} | {gain} | {gelo} | {'★' if point.pareto else ''} |")
        lines += ["", _chosen_sentence(result, variant), ""]
    if result.merged:
        lines += ["## Merged multi-task models", "",
                  "Several fine-tunes of one base added into one model (each at full strength): what it keeps of each "
                  "task's gain and of general vision.", "",
                  "| model | own-task gains (pp) | GELO |", "|---|---|---|"]
        for row in result.merged:
            gains = ", ".join(f"{t} " + ("–" if g is None else f"{g:+.2f}") for t, g in row.gains_pp.items())
            gelo = ", ".join(f"{p} {g:.3f}" for p, g in sorted(row.gelo.items()))
            lines.append(f"| {row.model} | {gains} | {gelo} |")
        lines.append("")
    return "\n".join(lines)


def _chosen_sentence(result: SweepResult, variant: str) -> str:
    """One sentence: the most specialised λ keeping ``keep`` of general accuracy, and the own-task gain it gives up."""
    chosen, full = result.chosen[variant], result.points[variant][-1]
    if chosen is None:
        return f"No λ > 0 keeps {100 * result.keep:g} % of the base's general accuracy on every protocol."
    if chosen.gain_pp is None or full.gain_pp is None:
        return f"λ = {chosen.lam:g} keeps {100 * result.keep:g} % of general accuracy (own task not measured)."
    return (f"λ = {chosen.lam:g} is the most specialised point keeping {100 * result.keep:g} % of the base's general "
            f"accuracy on every protocol: own task {chosen.gain_pp:+.2f} pp against {full.gain_pp:+.2f} pp at λ = 1 "
            f"(it costs {full.gain_pp - chosen.gain_pp:.2f} pp).")


def sweep_csv(result: SweepResult) -> str:
    """The sweep's points as CSV (one row per fine-tune and λ)."""
    protocols = sorted({p for points in result.points.values() for point in points for p in point.gelo})
    rows = ["variant,lambda,model,own_task_gain_pp," + ",".join(f"gelo_{p}" for p in protocols) + ",pareto,chosen"]
    for variant, points in result.points.items():
        chosen = result.chosen[variant]
        for point in points:
            gelo = ",".join(f"{point.gelo[p]:.6f}" if p in point.gelo else "" for p in protocols)
            gain = "" if point.gain_pp is None else f"{point.gain_pp:.6f}"
            rows.append(f"{variant},{point.lam:g},{point.model},{gain},{gelo},{int(point.pareto)},"
                        f"{int(chosen is not None and chosen.lam == point.lam)}")
    return "\n".join(rows) + "\n"


def write_sweep(result: SweepResult) -> Path:
    """Write ``sweep.md``, ``sweep.csv`` and (with matplotlib) ``figures/frontier.png`` into the sweep run folder."""
    from overspec.report import plots

    out = result.run_dir / "sweep"
    atomic_write_text(out / "sweep.csv", sweep_csv(result))
    text = sweep_markdown(result)
    if plots.matplotlib_available():
        series = {v: [(p.lam, p.gain_pp, p.gelo, p.pareto) for p in points] for v, points in result.points.items()}
        plots.frontier(series, GENERAL_PROTOCOLS, out / "figures" / "frontier.png")
        text += ("\n![Own-task gain against GELO along each fine-tune's λ path](figures/frontier.png)\n\n"
                 "Each line is one fine-tune moved from its base (λ = 0, at GELO 1 and no gain) to itself (λ = 1); "
                 "filled points are on its Pareto frontier.\n")
    atomic_write_text(out / "sweep.md", text)
    return out / "sweep.md"
