"""Build the trade-off report of a finished run from its stored results, and compare two runs.

Nothing is re-evaluated: tables come from ``results.jsonl``, intervals and McNemar tests from the stored per-sample
predictions, model relations from ``provenance.json``. Output goes to ``<run>/report/``: ``report.md``,
``report.html`` (self-contained), ``tables/*.csv`` and ``tables/*.tex``, ``figures/*.png``, ``findings.json``.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import yaml

from overspec.data.biometric.benchmarks import TASK_KINDS
from overspec.files import atomic_write_text, combine, file_sha256
from overspec.protocols.base import protocol_of_unit, unregistered_units
from overspec.report import plots
from overspec.report.costs import cost_blocks
from overspec.report.findings import Finding, evaluate_findings
from overspec.report.render import Block, Bullets, Figure, Heading, Paragraph, Table, to_csv, to_html, to_latex, \
    to_markdown
from overspec.report.rundata import RunData, load_run
from overspec.report.summary import METRIC_TITLES, UNREACHABLE, UNREACHABLE_NOTE
from overspec.report.stats import GeneralBootstrap, general_bootstrap, mcnemar
from overspec.report.sweep_section import section_blocks, section_digest
from overspec.report.tables import MAIN, SCORING_LABELS, AttackSetTable, BiometricTable, GeneralTable, \
    attack_set_tables, biometric_table, cka_profiles, general_protocols, general_table, most_moved_blocks

logger = logging.getLogger(__name__)

__all__ = ["MADE_FROM", "UNREAD_PROVENANCE", "build_report", "compare_runs", "report_blocks", "report_inputs",
           "specialisation_gain", "task_gain"]

#: The file in the report folder naming what the report was made from (:func:`report_inputs`) and the files it wrote.
MADE_FROM = "made-from.json"
#: Provenance entries every run rewrites (its timings, which units it computed or reused) and the report never reads.
UNREAD_PROVENANCE = ("timings", "units")


def _pct(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{100 * value:.{digits}f}"


def _ci(interval: tuple[float, float] | None, scale: float = 100.0, digits: int = 2) -> str:
    return "–" if interval is None else f"[{scale * interval[0]:.{digits}f}, {scale * interval[1]:.{digits}f}]"


def _accuracy_table(table: GeneralTable) -> Table:
    header = ["model", *table.datasets, "Avg", "GELO"]
    rows, data = [], []
    for model in table.models:
        values = table.row(model)
        gelo = table.gelo(model) if model in table.variants() else None
        rows.append([model, *(_pct(v) for v in values), _pct(table.average(model)),
                     "–" if gelo is None else f"{gelo:.3f}"])
        data.append([model, *values, table.average(model), gelo])
    notes = [f"{d} left out of Avg/GELO: no value for {', '.join(ms)}" for d, ms in table.excluded.items()]
    notes.append("Avg = plain mean of unrounded per-dataset values; GELO = fine-tune Avg ÷ base Avg (same datasets).")
    return Table(f"{table.protocol}_{table.metric}", f"{table.protocol.replace('_', ' ')}: {table.metric} (%)",
                 header, rows, data, notes)


def _summary_table(table: GeneralTable, boot: GeneralBootstrap | None) -> Table:
    header = ["model", "base", "Avg (%)", "Avg 95% CI", "GELO", "GELO 95% CI"]
    rows, data = [], []
    for model in table.models:
        avg_ci = boot.interval(boot.average(model, table.datasets)) if boot else None
        base = table.bases.get(model, "") if model in table.variants() else ""
        gelo = table.gelo(model) if base else None
        gelo_ci = boot.interval(boot.gelo(model, base, table.datasets)) if boot and base else None
        rows.append([model, base or "–", _pct(table.average(model)), _ci(avg_ci), "–" if gelo is None else
                     f"{gelo:.3f}", _ci(gelo_ci, 1.0, 3)])
        data.append([model, base, table.average(model), *(avg_ci or (None, None)), gelo, *(gelo_ci or (None, None))])
    return Table(f"{table.protocol}_{table.metric}_summary", f"{table.protocol.replace('_', ' ')}: averages and "
                 "GELO with paired bootstrap intervals", header, rows, data,
                 [] if boot else ["no stored per-sample predictions: intervals unavailable"],
                 ["model", "base", "avg", "avg_low", "avg_high", "gelo", "gelo_low", "gelo_high"])


def _delta_table(run: RunData, table: GeneralTable, boot: GeneralBootstrap | None, method: str) -> Table:
    header = ["variant", "dataset", "Δ (pp)", "95% CI", "b (only variant right)", "c (only base right)",
              f"McNemar p ({method})"]
    rows, data = [], []
    for variant in table.variants():
        base = table.bases[variant]
        for dataset in table.datasets:
            delta = table.delta(variant, dataset)
            interval = boot.interval(boot.delta(variant, base, dataset)) if boot else None
            test = _mcnemar_of(run, variant, base, dataset, table, method)
            rows.append([variant, dataset, f"{100 * delta:+.2f}", _ci(interval),
                         *(("–", "–", "–") if test is None else (str(test.b), str(test.c), f"{test.p_value:.3g}"))])
            data.append([variant, dataset, delta, *(interval or (None, None)),
                         *((None, None, None) if test is None else (test.b, test.c, test.p_value))])
    return Table(f"{table.protocol}_{table.metric}_deltas", f"{table.protocol.replace('_', ' ')}: fine-tune − base "
                 "per dataset, paired bootstrap interval and McNemar test", header, rows, data,
                 [f"McNemar {method}: two-sided, on the images where exactly one model is right."],
                 ["variant", "dataset", "delta", "delta_low", "delta_high", "b", "c", "p_value"])


def _control_table(run: RunData, tables: dict[str, GeneralTable]) -> Table | None:
    """How much of each variant's general change its preprocessing alone explains: the base fed the variant's
    preprocessing (the control) against the base, beside the variant (fed the base's) against the base."""
    header = ["variant", "protocol", "base Avg", "control Avg", "variant Avg", "preprocessing part (pp)",
              "weights part (pp)"]
    rows, data = [], []
    for control, info in run.models.items():
        variant = info.control_of
        base = run.models[variant].base if variant in run.models else ""
        for protocol, table in tables.items():
            if not (_in_findings(protocol) and {control, variant, base} <= set(table.models)):
                continue
            averages = [table.average(m) for m in (base, control, variant)]
            parts = [100 * (averages[1] - averages[0]), 100 * (averages[2] - averages[0])]
            rows.append([variant, protocol, *(_pct(a) for a in averages), *(f"{x:+.2f}" for x in parts)])
            data.append([variant, protocol, *averages, *parts])
    if not rows:
        return None
    return Table("preprocessing_control", "preprocessing control: the base fed each variant's own preprocessing",
                 header, rows, data, ["General units feed every variant its base's preprocessing, so the variant's "
                                      "change is its weights' part; the control shows what its preprocessing alone "
                                      "would have cost."],
                 ["variant", "protocol", "base_avg", "control_avg", "variant_avg", "preprocessing_pp", "weights_pp"])


def _mcnemar_of(run: RunData, variant: str, base: str, dataset: str, table: GeneralTable, method: str):
    if table.metric != "acc1":
        return None
    a, b = run.predictions(variant, dataset, table.protocol), run.predictions(base, dataset, table.protocol)
    if a is None or b is None or "correct" not in a or "correct" not in b or a["correct"].shape != b["correct"].shape:
        return None
    return mcnemar(a["correct"], b["correct"], method=method)


def _accuracy_interval_table(table: GeneralTable, boot: GeneralBootstrap) -> Table:
    header = ["model", "dataset", "acc (%)", "95% CI"]
    rows, data = [], []
    for model in table.models:
        for dataset in table.datasets:
            interval = boot.interval(boot.accuracy(model, dataset))
            rows.append([model, dataset, _pct(table.values[(model, dataset)]), _ci(interval)])
            data.append([model, dataset, table.values[(model, dataset)], *(interval or (None, None))])
    return Table(f"{table.protocol}_{table.metric}_intervals", f"{table.protocol.replace('_', ' ')}: per-dataset "
                 f"{table.metric} with bootstrap intervals ({boot.n_boot} resamples of the images, seed {boot.seed})",
                 header, rows, data, data_header=["model", "dataset", "value", "low", "high"])


def _bio_table(bio: BiometricTable) -> Table:
    header = ["model", *(f"{c.label} {'↑' if c.higher_is_better else '↓'}" for c in bio.columns)]
    rows, data = [], []
    for model in bio.models:
        cells = [bio.cell(model, c) for c in bio.columns]
        rows.append([model, *("–" if cell is None else (_pct(cell.value) if cell.reachable else UNREACHABLE) + (
            f" [{SCORING_LABELS.get(cell.scoring, cell.scoring)}]" if cell.scoring else "") for cell in cells)])
        data.append([model, *(None if cell is None or not cell.reachable else cell.value for cell in cells)])
    notes = ["MAD/PAD cells name their scoring: [own head] = the fine-tune's trained head, [probe] = a binary "
             "probe trained on frozen features, [zero-shot] = text prompts."] + bio.conventions
    if any(not cell.reachable for cell in bio.cells.values()):
        notes.append(UNREACHABLE_NOTE)
    return Table("biometric", "biometric benchmarks (%)", header, rows, data, notes)


def _grouped(values: list[float | None]) -> str:
    """Percentages of one column group joined as Table C prints them ("39.36/17.18/12.39")."""
    return "/".join(_pct(v) for v in values)


def _attack_set_block(table: AttackSetTable) -> Table:
    """Table C's per-attack rows and the average row of each model, one cell per column group."""
    header = ["model", "scoring", "set", *(f"{g.label} {'↑' if g.higher_is_better else '↓'}" for g in table.groups)]
    flat = [metric for metrics in table.metrics for metric in metrics]
    rows, data = [], []
    for model in table.models:
        scoring = SCORING_LABELS.get(table.scoring[model], table.scoring[model]) or "–"
        for attack_set in table.sets:
            values = {m: table.value(model, attack_set, m) for m in flat}
            rows.append([model, scoring, table.set_label(attack_set),
                         *(_grouped([values[m] for m in metrics]) for metrics in table.metrics)])
            data.append([model, table.scoring[model], *attack_set, *(values[m] for m in flat)])
        averages = {m: table.average(model, m) for m in flat}
        rows.append([model, scoring, f"Avg ({len(table.sets)} sets)",
                     *(_grouped([averages[m] for m in metrics]) for metrics in table.metrics)])
        data.append([model, table.scoring[model], "", "average", *(averages[m] for m in flat)])
    sets = "; ".join(f"{table.set_label(s)} = {s[0]} {s[1]}" for s in table.sets)
    notes = [f"Avg ({len(table.sets)} sets) = mean over every {table.kind.upper()} attack set of the run (each "
             "benchmark's morphing methods; the study's six-set average = SYN-MAD-2022's five methods and MorDIFF), "
             "from unrounded values; '–' where a model lacks a set.", f"Sets: {sets}.",
             "Each model's rows come from one scoring (own head first, then probe, then zero-shot)."] \
        + table.conventions
    return Table(f"{table.kind}_attack_sets", f"{table.kind.upper()} per attack set (%)", header, rows, data, notes,
                 ["model", "scoring", "benchmark", "attack_type", *flat])


def specialisation_gain(run: RunData, bio: BiometricTable, variant: str) -> float | None:
    """Mean improvement (pp) of ``variant`` over its base on its own task's columns; None if not measured."""
    info = run.models.get(variant)
    if info is None or not info.base:
        return None
    return task_gain(bio, variant, info.base, info.specialisation)


def task_gain(bio: BiometricTable, model: str, base: str, task: str) -> float | None:
    """Mean improvement (pp) of ``model`` over ``base`` on the columns of ``task`` (fr, mad or pad), reachable
    operating points only, lower-is-better metrics negated; None if not measured."""
    gains = []
    for column in bio.columns:
        if column.kind not in TASK_KINDS.get(task, ()):
            continue
        mine, theirs = bio.cell(model, column), bio.cell(base, column)
        if mine is not None and theirs is not None and mine.reachable and theirs.reachable:
            sign = 1.0 if column.higher_is_better else -1.0
            gains.append(100 * sign * (mine.value - theirs.value))
    return float(np.mean(gains)) if gains else None


def _figures(run: RunData, tables: dict[str, GeneralTable], boots: dict, bio: BiometricTable,
             out: Path) -> list[Figure]:
    if not plots.matplotlib_available():
        logger.warning("matplotlib is not installed: the report has no figures")
        return []
    figures = []
    bars = [plots.GeloBar(v, p, run.models[v].specialisation, t.gelo(v),
                          boots[p].interval(boots[p].gelo(v, t.bases[v], t.datasets)) if boots.get(p) else None)
            for p, t in tables.items() if _in_findings(p) for v in t.variants()]
    if bars:
        figures.append(_figure_block("gelo_bars", "GELO per fine-tune and protocol", plots.gelo_bars(
            bars, out / "figures" / "gelo_bars.png"), out))
    points = []
    for bar in bars:
        gain = specialisation_gain(run, bio, bar.model)
        if gain is not None:
            points.append(plots.GainPoint(bar.model, bar.specialisation, gain, 100 * (1 - bar.gelo), bar.protocol))
    if points:
        figures.append(_figure_block("gain_vs_loss", "specialisation gain vs generalisation loss",
                                     plots.gain_vs_loss(points, out / "figures" / "gain_vs_loss.png"), out))
    for protocol, table in tables.items():
        variants = table.variants()
        if variants and _in_findings(protocol):
            deltas = np.array([[100 * table.delta(v, d) for d in table.datasets] for v in variants])
            path = plots.delta_heatmap(variants, table.datasets, deltas, out / "figures" / f"delta_{protocol}.png",
                                       f"{protocol.replace('_', ' ')}: fine-tune − base (pp)")
            figures.append(_figure_block(f"delta_{protocol}", f"per-dataset deltas, {protocol}", path, out))
    return figures


def _figure_block(name: str, caption: str, path: Path, out: Path) -> Figure:
    return Figure(name, caption, path.read_bytes(), str(path.relative_to(out)))


def _finding_blocks(findings: list[Finding]) -> list[Block]:
    blocks: list[Block] = [Heading("Findings of the study, re-evaluated on this run")]
    for number, finding in enumerate(findings, 1):
        blocks.append(Heading(f"{number}. {finding.claim}: {finding.verdict.upper()}", 3))
        items = [c.text() for c in finding.comparisons] + finding.notes
        if items:
            blocks.append(Bullets(tuple(items)))
    return blocks


def report_blocks(run: RunData, *, n_boot: int = 1000, seed: int = 0, level: float = 0.95,
                  size_order: Mapping[str, float] | None = None, mcnemar_method: str = "midp",
                  out: Path | None = None) -> tuple[list[Block], list[Finding]]:
    """Return the report document of ``run`` and its findings; figures are written under ``out`` when given."""
    tables = {p: t for p in general_protocols(run.records) if (t := general_table(run, p, _main(p))) is not None}
    boots = {p: _bootstrap_or_none(run, t, n_boot, seed, level) for p, t in tables.items()}
    findings = evaluate_findings(run, {p: t for p, t in tables.items() if _in_findings(p)}, boots,
                                 size_order=size_order)
    bio = biometric_table(run)
    intervals = (f"Intervals: {int(100 * level)}% percentile bootstrap over test images ({n_boot} resamples, seed "
                 f"{seed}), paired across models on each dataset." if any(b is not None for b in boots.values())
                 else "Intervals: none (the run stored no per-sample predictions to resample).")
    blocks: list[Block] = [Heading(f"overspec trade-off report: {run.name}", 1), Paragraph(_run_summary(run)),
                           Paragraph(intervals), *answer_blocks(run, tables, boots, bio)]
    blocks += _finding_blocks(findings)
    appendix: list[Block] = []
    for protocol, table in tables.items():
        blocks += [Heading(f"{protocol.replace('_', ' ')} ({METRIC_TITLES.get(table.metric, table.metric)})"),
                   _accuracy_table(table)]
        if table.metric == MAIN:
            blocks.append(_accuracy_table(general_table(run, protocol, "acc1")))
        blocks.append(_summary_table(table, boots[protocol]))
        if table.variants():
            blocks.append(_delta_table(run, table, boots[protocol], mcnemar_method))
        if boots[protocol] is not None:
            appendix.append(_accuracy_interval_table(table, boots[protocol]))
    control = _control_table(run, tables)
    if control is not None:
        blocks += [Heading("Preprocessing control"), control]
    if bio.columns:
        blocks += [Heading("Biometric benchmarks"), _bio_table(bio)]
        blocks += [_attack_set_block(table) for table in attack_set_tables(run)]
    blocks += _cka_blocks(run, out)
    blocks += cost_blocks(run)
    blocks += section_blocks(run.run_dir, run.provenance.get("config_hash", ""), out)
    unknown = unregistered_units(r.protocol for r in run.records)
    if unknown:
        blocks.append(Paragraph(f"Not reported: no registered protocol reports {', '.join(unknown)} (their records "
                                "are in results.jsonl)."))
    if out is not None:
        figures = _figures(run, tables, boots, bio, out)
        if figures:
            blocks += [Heading("Figures"), *figures]
    if appendix:
        blocks += [Heading("Appendix: accuracy intervals"), *appendix]
    return blocks, findings


def _cka_blocks(run: RunData, out: Path | None) -> list[Block]:
    """Where each fine-tune moved: CKA with its base per visual block and dataset, the blocks that moved most, and
    (with ``out``) one figure per fine-tune."""
    profiles = cka_profiles(run)
    if not profiles:
        return []
    depth = max(len(values) for datasets in profiles.values() for values in datasets.values())
    header = ["model", "dataset", *(f"block {b}" for b in range(depth)), "mean"]
    rows, moved = [], []
    for variant, datasets in profiles.items():
        for dataset, values in datasets.items():
            rows.append([variant, dataset, *(f"{v:.3f}" for v in values), *([""] * (depth - len(values))),
                         f"{float(np.mean(values)):.3f}"])
        lowest = ", ".join(f"block {b} ({value:.3f})" for b, value in most_moved_blocks(datasets))
        moved.append(f"{variant}: {lowest}")
    blocks: list[Block] = [
        Heading("Where it happens: linear CKA per block"),
        Paragraph("Linear CKA (Kornblith et al., ICML 2019) between each fine-tune's and its base's class token after "
                  "every visual block, on the same images: 1 means the block's representation is unchanged up to "
                  "rotation and scale, lower means fine-tuning moved it. The blocks that moved most, averaged over "
                  "datasets:"),
        Bullets(tuple(moved)),
        Table("cka", "Linear CKA with the base per visual block", header, rows)]
    if out is not None and plots.matplotlib_available():
        for variant, datasets in profiles.items():
            path = plots.cka_profile(variant, datasets, out / "figures" / f"cka_{_file_name(variant)}.png")
            blocks.append(_figure_block(f"cka_{_file_name(variant)}", f"where {variant} moved: CKA per block", path,
                                        out))
    return blocks


def _main(unit_name: str) -> str:
    """The metric a general unit's table shows: each dataset's main metric for classification protocols."""
    metric = protocol_of_unit(unit_name).report.metric
    return MAIN if metric == "acc1" else metric


def answer_blocks(run: RunData, tables: dict[str, GeneralTable], boots: dict, bio: BiometricTable) -> list[Block]:
    """The study's answer first: per fine-tune, what it gained on its own task and what it kept of general vision
    (GELO per study protocol, with its interval when one could be computed)."""
    lines = []
    for variant, info in run.models.items():
        if not info.base:
            continue
        gain = specialisation_gain(run, bio, variant)
        parts = [f"own task {gain:+.2f} pp" if gain is not None else "own task not measured"]
        for protocol, table in tables.items():
            if _in_findings(protocol) and variant in table.variants():
                boot = boots.get(protocol)
                interval = boot.interval(boot.gelo(variant, info.base, table.datasets)) if boot else None
                parts.append(f"GELO {protocol_of_unit(protocol).report.title} {table.gelo(variant):.3f}"
                             + ("" if interval is None else f" [{interval[0]:.3f}, {interval[1]:.3f}]"))
        lines.append(f"{variant} ({info.specialisation or '?'} fine-tune of {info.base}): " + "; ".join(parts))
    if not lines:
        return []
    return [Heading("The answer: what each specialisation cost"), Bullets(tuple(lines))]


def _in_findings(unit_name: str) -> bool:
    """Whether a general unit's table enters the study's GELO findings and figures (its protocol says)."""
    return protocol_of_unit(unit_name).in_findings(unit_name)


def _bootstrap_or_none(run, table, n_boot, seed, level) -> GeneralBootstrap | None:
    boot = general_bootstrap(run, table.protocol, table.metric, models=table.models, n_boot=n_boot, seed=seed,
                             level=level)
    return boot if boot.replicates else None


def _run_summary(run: RunData) -> str:
    parts = [f"Run '{run.name}' in {run.run_dir}", f"config hash {run.provenance.get('config_hash', '?')}"]
    models = [f"{m} (fine-tune of {i.base}, {i.specialisation or '?'})" if i.base else f"{m} (base)"
              for m, i in run.models.items()]
    return "; ".join(parts) + ". Models: " + ", ".join(models) + "."


def build_report(run_dir: Path | str, *, n_boot: int = 1000, seed: int = 0, level: float = 0.95,
                 size_order: Mapping[str, float] | None = None, mcnemar_method: str = "midp") -> Path:
    """Rebuild ``<run_dir>/report/`` (Markdown, HTML, CSV, LaTeX, figures, findings.json); return that folder.

    A report whose inputs (:func:`report_inputs`) are those it was made from, with every file it wrote still there,
    is kept as it is: a second run that changed no record does not redraw it.
    """
    run_dir = Path(run_dir)
    out = run_dir / "report"
    settings = {"n_boot": n_boot, "seed": seed, "level": level, "size_order": dict(size_order or {}),
                "mcnemar_method": mcnemar_method}
    inputs = report_inputs(run_dir, settings)
    if _is_current(out, inputs):
        logger.info("report of %s kept: made from the same results, settings and code", run_dir)
        return out
    (out / MADE_FROM).unlink(missing_ok=True)
    run = load_run(run_dir)
    blocks, findings = report_blocks(run, n_boot=n_boot, seed=seed, level=level, size_order=size_order,
                                     mcnemar_method=mcnemar_method, out=out)
    written = ["report.md", "report.html", "findings.json", "answer.md"]
    atomic_write_text(out / "report.md", to_markdown(blocks))
    atomic_write_text(out / "report.html", to_html(blocks, f"overspec report: {run.name}"))
    for block in blocks:
        if isinstance(block, Table):
            atomic_write_text(out / "tables" / f"{_file_name(block.name)}.csv", to_csv(block))
            atomic_write_text(out / "tables" / f"{_file_name(block.name)}.tex", to_latex(block))
            written += [f"tables/{_file_name(block.name)}.csv", f"tables/{_file_name(block.name)}.tex"]
        elif isinstance(block, Figure):
            written.append(block.file)
    atomic_write_text(out / "findings.json", json.dumps([f.as_dict() for f in findings], indent=1))
    atomic_write_text(out / "answer.md", to_markdown(_answer_of(blocks)))
    atomic_write_text(out / MADE_FROM, json.dumps({"inputs": inputs, "files": written}, indent=1))
    logger.info("report of %s written to %s", run.name, out)
    return out


def report_inputs(run_dir: Path, settings: Mapping[str, object]) -> str:
    """Digest of everything a report is made from: the run's results, provenance (less what every run rewrites and
    the report never reads), config and predictions, the build settings, overspec's code and the packages that draw
    it, and the section of the study's sweep (:mod:`overspec.report.sweep_section`). Equal digests make equal
    reports."""
    def content(path: Path) -> str:
        return file_sha256(path) if path.is_file() else "absent"

    provenance_path = run_dir / "provenance.json"
    provenance = json.loads(provenance_path.read_text()) if provenance_path.is_file() else {}
    read = {key: value for key, value in provenance.items() if key not in UNREAD_PROVENANCE}
    predictions = sorted((run_dir / "predictions").glob("*.npz"))
    return combine("report-v1", str(run_dir), json.dumps(settings, sort_keys=True), _code_digest(),
                   json.dumps(_drawing_versions(), sort_keys=True), content(run_dir / "results.jsonl"),
                   content(run_dir / "config.yaml"), json.dumps(read, sort_keys=True),
                   *(f"{path.name}={file_sha256(path)}" for path in predictions), section_digest(run_dir))


def _is_current(out: Path, inputs: str) -> bool:
    """Whether the report in ``out`` was made from ``inputs`` and every file it wrote is still there."""
    try:
        made = json.loads((out / MADE_FROM).read_text())
    except (OSError, ValueError):
        return False
    return made.get("inputs") == inputs and all((out / name).is_file() for name in made.get("files", ()))


def _code_digest() -> str:
    """Digest of overspec's installed files (code, catalogs, recipes): any change to them may change a report."""
    package = Path(__file__).resolve().parents[1]
    files = sorted(p for p in package.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    return combine(*(f"{p.relative_to(package)}={file_sha256(p)}" for p in files))


def _drawing_versions() -> dict[str, str]:
    """Installed versions of the packages that compute intervals and draw figures (``absent`` when missing)."""
    versions = {}
    for name in ("numpy", "scipy", "matplotlib"):
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions


def _answer_of(blocks: list[Block]) -> list[Block]:
    """The answer's heading and lines, as the command line prints them first (empty when no fine-tune was run)."""
    start = next((i for i, b in enumerate(blocks) if isinstance(b, Heading) and b.text.startswith("The answer")),
                 None)
    return [] if start is None else blocks[start:start + 2]


def _file_name(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in name)


# ---- comparing two runs -------------------------------------------------------------------------------------------

def _record_map(run: RunData) -> dict[tuple, object]:
    return {(r.model, r.dataset, r.split, r.protocol, r.metric): r for r in run.records}


def _flatten(data, prefix: str = "") -> dict[str, object]:
    if isinstance(data, dict):
        flat: dict[str, object] = {}
        for key, value in data.items():
            flat.update(_flatten(value, f"{prefix}{key}."))
        return flat
    return {prefix.rstrip("."): data}


def _dict_changes(title: str, a: Mapping, b: Mapping) -> list[str]:
    keys = sorted(set(a) | set(b))
    lines = [f"- `{k}`: {a.get(k, '(absent)')!r} → {b.get(k, '(absent)')!r}" for k in keys if a.get(k) != b.get(k)]
    return [f"## {title}", ""] + (lines or ["none"]) + [""]


def compare_runs(run_a: Path | str, run_b: Path | str, *, tolerance: float = 1e-9) -> str:
    """Markdown account of what changed from run A to run B: records, values beyond ``tolerance``, config, versions."""
    a, b = load_run(run_a), load_run(run_b)
    map_a, map_b = _record_map(a), _record_map(b)
    added = sorted(set(map_b) - set(map_a))
    removed = sorted(set(map_a) - set(map_b))
    changed = [(k, map_a[k].value, map_b[k].value) for k in sorted(set(map_a) & set(map_b))
               if not _close(map_a[k].value, map_b[k].value, tolerance)]
    lines = [f"# Comparing runs: {a.name} ({a.run_dir}) → {b.name} ({b.run_dir})", "",
             f"{len(map_a)} vs {len(map_b)} records: {len(added)} added, {len(removed)} removed, "
             f"{len(changed)} changed beyond {tolerance:g}.", ""]
    lines += _key_section("Records added", added) + _key_section("Records removed", removed)
    lines += ["## Values changed", ""]
    lines += [f"- {_key_text(k)}: {va:.6g} → {vb:.6g} (Δ {vb - va:+.6g})" for k, va, vb in changed] or ["none"]
    lines.append("")
    lines += _dict_changes("Model fingerprints", a.provenance.get("model_fingerprints", {}),
                           b.provenance.get("model_fingerprints", {}))
    lines += _dict_changes("Config", _flatten(yaml.safe_load(a.config_text) or {}),
                           _flatten(yaml.safe_load(b.config_text) or {}))
    lines += _dict_changes("Package versions", a.provenance.get("versions", {}), b.provenance.get("versions", {}))
    lines += _dict_changes("Environment", a.provenance.get("environment", {}), b.provenance.get("environment", {}))
    return "\n".join(lines).rstrip() + "\n"


def _close(x: float, y: float, tolerance: float) -> bool:
    if np.isnan(x) and np.isnan(y):
        return True
    return abs(x - y) <= tolerance


def _key_text(key: tuple) -> str:
    model, dataset, split, protocol, metric = key
    return f"{model} / {dataset}:{split} / {protocol} / {metric}"


def _key_section(title: str, keys: list[tuple]) -> list[str]:
    return [f"## {title}", ""] + ([f"- {_key_text(k)}" for k in keys] or ["none"]) + [""]
