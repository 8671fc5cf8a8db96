"""Move along the trade-off: each fine-tune's path in weight space from its base, and merged multi-task models.

For every fine-tune of a study, ``base + λ (fine-tune - base)`` for λ on a grid is a model of its own
(:mod:`overspec.models.arithmetic`); so is the sum of several fine-tunes of one base. The sweep evaluates them all
in one run beside the study's models, with one scoring for every point (attack detection by a probe on frozen
features, since a fine-tune's own head belongs to λ = 1 only) and no k-shot probes, then reads, per fine-tune and λ,
the own-task gain over the base (pp) against GELO (zero-shot and linear probe). The Pareto frontier is the set of λ
that no other λ beats on both; the chosen λ is the most specialised one whose every GELO is at least ``keep``.

Regularised fine-tunes (:mod:`overspec.finetune.variants`: feature distillation, L2-SP, a lower LoRA rank) are
evaluated in the same run and placed against their fine-tune's λ path: a point that no λ matches on every axis lies
beyond the frontier, i.e. regularising bought a trade-off that moving along the line in weight space cannot.
The sweep's document (``sweep/sweep.md``) is also stored as blocks (``sweep/section.json``) that the study's own
report includes (:mod:`overspec.report.sweep_section`).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from overspec.config.model import CombineTerm, ModelSpec
from overspec.config.run import RunConfig, resolved_dict
from overspec.errors import InputError
from overspec.files import atomic_write_text
from overspec.finetune.variants import FinetuneVariant, variant_config, variant_specs
from overspec.report.build import task_gain
from overspec.report.render import Block, Figure, Heading, Paragraph, Table, to_markdown
from overspec.report.rundata import RunData, load_run
from overspec.report.sweep_section import SWEEP_SUFFIX, write_section
from overspec.report.tables import biometric_table, general_table
from overspec.results import config_hash
from overspec.runner import run_study

__all__ = ["DEFAULT_LAMBDAS", "DEFAULT_REGULARISED", "MergedRow", "RegularisedPoint", "SweepPoint", "SweepResult",
           "merged_specs", "run_sweep", "sweep_blocks", "sweep_config", "sweep_markdown", "sweep_specs"]

#: λ = 0, 0.1, …, 1 (Wortsman et al.'s WiSE-FT grid); written as tenths so that each λ is the float its text reads.
DEFAULT_LAMBDAS = tuple(i / 10 for i in range(11))
GENERAL_PROTOCOLS = ("zero_shot", "linear_probe")
_TASKS = ("fr", "mad", "pad")

#: The embedded world's regularisation points: per recipe feature distillation, L2-SP and a lower LoRA rank, made on
#: the study's first fine-tuned base. Weights from MADation on tiny-s (world profile, 100 steps): the plain fine-tune
#: moves held-out MAD embeddings to a mean 1 − cos of 0.71 from the base (dev EER 0.27); distill=0.3 keeps 0.11 at
#: the same EER, l2sp=0.01 0.46 (EER 0.39), rank 1 0.58 (EER 0.42); distill=1 or l2sp=0.1 undo the fine-tune.
#: FRoundation moves less (0.21, LFW 0.733): distill=0.3 keeps 0.16 (LFW 0.753), l2sp=0.01 0.19 (LFW 0.710).
DEFAULT_REGULARISED: tuple[FinetuneVariant, ...] = tuple(
    FinetuneVariant(recipe, (override,))
    for recipe in ("froundation", "madation", "foundpad")
    for override in ("regularise.distill=0.3", "regularise.l2sp=0.01", "lora.rank=1"))


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


@dataclass(frozen=True)
class RegularisedPoint:
    """A regularised fine-tune placed against the λ path of the plain fine-tune of its base and task: its gain and
    GELO, and the λ whose points are at least as good on every axis (empty: it lies beyond the λ frontier)."""

    variant: str
    model: str
    label: str
    gain_pp: float | None
    gelo: dict[str, float]
    dominated_by: tuple[float, ...] = ()

    @property
    def beyond(self) -> bool:
        """Whether no λ point matches it on every axis (measured points only)."""
        return self.gain_pp is not None and bool(self.gelo) and not self.dominated_by


@dataclass
class SweepResult:
    """The sweep's points per fine-tune, the chosen λ per fine-tune (None: no λ > 0 keeps enough), merged rows and
    the regularised points per fine-tune."""

    run_dir: Path
    keep: float
    points: dict[str, list[SweepPoint]]
    chosen: dict[str, SweepPoint | None]
    merged: list[MergedRow]
    regularised: dict[str, list[RegularisedPoint]] = dataclasses.field(default_factory=dict)


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


def sweep_config(config: RunConfig, specs: Sequence[ModelSpec], lambdas: Sequence[float], merged: bool,
                 regularised: Sequence[ModelSpec] = ()) -> RunConfig:
    """Return the sweep's run config: the study's models (fine-tunes as made), every λ point and merged model, the
    ``regularised`` fine-tunes, one attack scoring (a probe on frozen features), no k-shot probes, no CKA, no
    preprocessing controls, and each model with a task evaluated on its own tasks' benchmarks only (what the sweep
    reads); written to ``<name>-sweep``."""
    bad = [lam for lam in lambdas if not (math.isfinite(lam) and 0 <= lam <= 1)]
    if bad:
        raise InputError(f"sweep: λ values must lie in [0, 1], got {bad}")
    models = [*specs, *sweep_specs(specs, lambdas), *(merged_specs(specs) if merged else []), *regularised]
    protocols = {**config.protocols,
                 "linear_probe": {**config.protocols.get("linear_probe", {}), "kshot": []},
                 "attack": {**config.protocols.get("attack", {}), "scoring": ["probe"]},
                 "cka": {**config.protocols.get("cka", {}), "enabled": False}}
    finetune = dataclasses.replace(config.finetune, recipes=())
    return dataclasses.replace(config, name=f"{config.name}{SWEEP_SUFFIX}", models=tuple(models),
                               protocols=protocols, finetune=finetune, preprocessing_controls=False,
                               biometric_scope="own")


def run_sweep(config: RunConfig, *, lambdas: Sequence[float] = DEFAULT_LAMBDAS, keep: float = 0.99,
              merged: bool = True, regularised: Sequence[FinetuneVariant] = DEFAULT_REGULARISED,
              regularised_bases: int = 1) -> SweepResult:
    """Run the study (reusing what it finished), fine-tune the ``regularised`` variants on its first
    ``regularised_bases`` fine-tuned bases (0: all; or reuse them), then run the sweep (the study's units it shares
    are copied from the study's run, not recomputed); write ``sweep.md`` /
    ``sweep.csv`` / ``section.json`` / the frontier figure into the sweep run's folder and return the points."""
    if not 0 < keep <= 1:
        raise InputError(f"sweep: keep must be a share of general accuracy in (0, 1], got {keep}")
    if regularised_bases < 0:
        raise InputError(f"sweep: regularised_bases must be >= 0 (0: every base), got {regularised_bases}")
    for variant in regularised:  # a bad override fails before anything runs
        variant_config(config, variant)
    study = run_study(config)
    variants = [spec for spec in study.models if spec.base and not spec.combine]
    if not variants:
        raise InputError(f"sweep: run {config.name!r} has no fine-tune with its base among the models "
                         "(name fine-tunes with `base:` or set finetune.recipes)")
    extra = variant_specs(config, study.models, regularised, max_bases=regularised_bases)
    sweep = run_study(sweep_config(config, study.models, lambdas, merged, extra), reuse_from=(study.run_dir,))
    placed = {spec.name: _line_of(spec, variants) for spec in extra}
    result = sweep_result(load_run(sweep.run_dir), [v.name for v in variants], lambdas, keep, placed)
    write_sweep(result, study_config_hash=config_hash(resolved_dict(config)))
    return result


def _line_of(spec: ModelSpec, variants: Sequence[ModelSpec]) -> str:
    """The plain fine-tune whose λ path a regularised fine-tune is placed on: the first of its base and task."""
    return next(v.name for v in variants if v.base == spec.base and v.specialisation == spec.specialisation)


def sweep_result(run: RunData, variants: Sequence[str], lambdas: Sequence[float], keep: float,
                 regularised: dict[str, str] | None = None) -> SweepResult:
    """Read the sweep's points, frontiers, chosen λ, merged rows and the ``regularised`` points (model → the fine-tune
    whose λ path it is placed on) from a finished sweep run."""
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
    placed: dict[str, list[RegularisedPoint]] = {}
    for model, variant in (regularised or {}).items():
        info = run.models[model]
        gelo = {p: g for p, t in tables.items() if (g := _gelo(t, model, info.base)) is not None}
        point = RegularisedPoint(variant, model, model.removeprefix(f"{info.base}-"),
                                 task_gain(bio, model, info.base, info.specialisation), gelo)
        placed.setdefault(variant, []).append(dataclasses.replace(
            point, dominated_by=_dominating_lambdas(point, points[variant])))
    return SweepResult(run.run_dir, keep, points, chosen, merged, placed)


def _gelo(table, model: str, base: str) -> float | None:
    """GELO of ``model`` against ``base`` in a general table (None when either is missing)."""
    if model not in table.models or base not in table.models:
        return None
    return table.average(model) / table.average(base)


def _scores(gain: float | None, gelo: dict[str, float]) -> tuple[float, ...] | None:
    """A point's axes (own-task gain, then GELO per protocol in name order); None when not measured."""
    if gain is None or not gelo:
        return None
    return (gain, *(gelo[p] for p in sorted(gelo)))


def _dominates(other: tuple[float, ...] | None, mine: tuple[float, ...]) -> bool:
    """Whether ``other`` is at least as good as ``mine`` on every axis and better on one."""
    return (other is not None and len(other) == len(mine) and other != mine
            and all(o >= m for o, m in zip(other, mine)))


def _with_frontier(points: list[SweepPoint]) -> list[SweepPoint]:
    """Mark the points no other point dominates (own-task gain and every GELO at least as high, one higher)."""
    measured = [_scores(p.gain_pp, p.gelo) for p in points]
    return [dataclasses.replace(p, pareto=s is not None and not any(_dominates(o, s) for o in measured))
            for p, s in zip(points, measured)]


def _dominating_lambdas(point: RegularisedPoint, line: Sequence[SweepPoint]) -> tuple[float, ...]:
    """The λ of ``line`` whose points are at least as good as ``point`` on every axis (equal counts as matching)."""
    mine = _scores(point.gain_pp, point.gelo)
    if mine is None:
        return ()
    return tuple(p.lam for p in line if (other := _scores(p.gain_pp, p.gelo)) is not None
                 and len(other) == len(mine) and all(o >= m for o, m in zip(other, mine)))


EXPLANATION = ("Each fine-tune's image weights scaled from its base (λ = 0) to itself (λ = 1); own task = mean gain "
               "over the base on the fine-tune's own benchmarks (pp, attack detection scored by a probe on frozen "
               "features at every λ); GELO = general average ÷ the base's (each dataset's main metric). ★ = on the "
               "Pareto frontier.")
FIGURE_SENTENCE = ("Each line is one fine-tune moved from its base (λ = 0, at GELO 1 and no gain) to itself (λ = 1), "
                   "filled points on its Pareto frontier; each diamond is a regularised fine-tune of the same base "
                   "and task, labelled with its setting: above or right of its line it keeps more for the same gain "
                   "than any λ does.")


def sweep_blocks(result: SweepResult, figure: Figure | None = None) -> list[Block]:
    """The sweep as a document: per fine-tune the λ table with its frontier and the chosen λ, the merged models, the
    regularised points against their λ paths, then ``figure`` with a sentence on how to read it."""
    blocks: list[Block] = [Heading("Moving along the trade-off", 1), Paragraph(EXPLANATION)]
    for variant, points in result.points.items():
        protocols = sorted({p for point in points for p in point.gelo})
        rows = [[f"{p.lam:g}", _signed(p.gain_pp), *(_ratio(p.gelo.get(g)) for g in protocols),
                 "★" if p.pareto else ""] for p in points]
        blocks += [Heading(variant), Table(f"sweep_{variant}", f"{variant}: own task and GELO per λ",
                                           ["λ", "own task (pp)", *(f"GELO {g}" for g in protocols), ""], rows),
                   Paragraph(_chosen_sentence(result, variant))]
    if result.merged:
        rows = [[row.model, ", ".join(f"{t} {_signed(g)}" for t, g in row.gains_pp.items()),
                 ", ".join(f"{p} {g:.3f}" for p, g in sorted(row.gelo.items()))] for row in result.merged]
        blocks += [Heading("Merged multi-task models"),
                   Paragraph("Several fine-tunes of one base added into one model (each at full strength): what it "
                             "keeps of each task's gain and of general vision."),
                   Table("sweep_merged", "Merged models", ["model", "own-task gains (pp)", "GELO"], rows)]
    if result.regularised:
        blocks += _regularised_blocks(result)
    if figure is not None:
        blocks += [figure, Paragraph(FIGURE_SENTENCE)]
    return blocks


def _regularised_blocks(result: SweepResult) -> list[Block]:
    """The regularised points beside the λ path of their fine-tune, and whether any λ matches them."""
    protocols = sorted({p for points in result.regularised.values() for point in points for p in point.gelo})
    rows = []
    for variant, points in result.regularised.items():
        for point in points:
            where = ("beyond the λ frontier" if point.beyond else "not measured" if point.gain_pp is None
                     else "matched by λ = " + ", ".join(f"{lam:g}" for lam in point.dominated_by))
            rows.append([point.model, variant, point.label, _signed(point.gain_pp),
                         *(_ratio(point.gelo.get(g)) for g in protocols), where])
    return [Heading("Regularised fine-tunes on the frontier"),
            Paragraph("Fine-tunes of the same base and task trained with a retention term (distill: feature "
                      "distillation to the base's embedding; l2sp: L2 towards the base weights) or a lower LoRA rank, "
                      "placed against the λ path of the plain fine-tune: 'beyond the λ frontier' means no λ is at "
                      "least as good on every axis, 'matched by λ = …' names the λ that are."),
            Table("sweep_regularised", "Regularised fine-tunes against the λ path",
                  ["model", "λ path of", "setting", "own task (pp)", *(f"GELO {g}" for g in protocols),
                   "against the λ path"], rows)]


def _signed(value: float | None) -> str:
    return "–" if value is None else f"{value:+.2f}"


def _ratio(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def sweep_markdown(result: SweepResult) -> str:
    """The sweep as Markdown (:func:`sweep_blocks` without the figure)."""
    return to_markdown(sweep_blocks(result))


def _chosen_sentence(result: SweepResult, variant: str) -> str:
    """One sentence: the most specialised λ keeping ``keep`` of general accuracy, and the own-task gain it gives up."""
    chosen, full = result.chosen[variant], result.points[variant][-1]
    if chosen is None:
        return f"No λ > 0 keeps {100 * result.keep:g} % of the base's general accuracy on every protocol."
    if chosen.gain_pp is None or full.gain_pp is None:
        return f"λ = {chosen.lam:g} keeps {100 * result.keep:g} % of general accuracy (own task not measured)."
    cost = full.gain_pp - chosen.gain_pp
    verdict = (f"it costs {cost:.2f} pp" if cost > 0 else "it costs nothing" if cost == 0
               else f"it is {-cost:.2f} pp better than λ = 1 on its own task too")
    return (f"λ = {chosen.lam:g} is the most specialised point keeping {100 * result.keep:g} % of the base's general "
            f"accuracy on every protocol: own task {chosen.gain_pp:+.2f} pp against {full.gain_pp:+.2f} pp at λ = 1 "
            f"({verdict}).")


def sweep_csv(result: SweepResult) -> str:
    """The sweep's points as CSV: one row per fine-tune and λ, then one per regularised fine-tune (``lambda`` empty,
    ``regularisation`` its setting, ``pareto`` 1 when beyond the λ frontier)."""
    protocols = sorted({p for points in [*result.points.values(), *result.regularised.values()]
                        for point in points for p in point.gelo})
    rows = ["variant,lambda,model,own_task_gain_pp," + ",".join(f"gelo_{p}" for p in protocols)
            + ",pareto,chosen,regularisation"]
    for variant, points in result.points.items():
        chosen = result.chosen[variant]
        for point in points:
            rows.append(f"{variant},{point.lam:g},{point.model},{_csv_number(point.gain_pp)},"
                        + ",".join(_csv_number(point.gelo.get(p)) for p in protocols)
                        + f",{int(point.pareto)},{int(chosen is not None and chosen.lam == point.lam)},")
    for variant, points in result.regularised.items():
        for point in points:
            rows.append(f"{variant},,{point.model},{_csv_number(point.gain_pp)},"
                        + ",".join(_csv_number(point.gelo.get(p)) for p in protocols)
                        + f",{int(point.beyond)},0,{point.label}")
    return "\n".join(rows) + "\n"


def _csv_number(value: float | None) -> str:
    return "" if value is None else f"{value:.6f}"


def write_sweep(result: SweepResult, study_config_hash: str = "") -> Path:
    """Write ``sweep.md``, ``sweep.csv``, ``section.json`` (the document for the study's report) and (with
    matplotlib) ``figures/frontier.png`` into the sweep run folder; return ``sweep.md``."""
    from overspec.report import plots

    out = result.run_dir / "sweep"
    atomic_write_text(out / "sweep.csv", sweep_csv(result))
    figure = None
    if plots.matplotlib_available():
        series = {v: [(p.lam, p.gain_pp, p.gelo, p.pareto) for p in points] for v, points in result.points.items()}
        marked = {v: [(p.label.partition("-")[2] or p.label, p.gain_pp, p.gelo) for p in points]
                  for v, points in result.regularised.items()}  # the line's colour already says the recipe
        path = plots.frontier(series, GENERAL_PROTOCOLS, out / "figures" / "frontier.png", regularised=marked)
        figure = Figure("frontier", "Own-task gain against GELO along each fine-tune's λ path, with the regularised "
                        "fine-tunes", path.read_bytes(), "figures/frontier.png")
    blocks = sweep_blocks(result, figure)
    atomic_write_text(out / "sweep.md", to_markdown(blocks))
    write_section(out, blocks, study_config_hash)
    return out / "sweep.md"
