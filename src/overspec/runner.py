"""Run a study: data, fine-tunes, every model × dataset × protocol as a resumable unit, then tidy results and a
summary.

Units (:mod:`overspec.evaluation`) are stored under a key made of everything that determines them, so a killed run
resumes with only the missing units and a changed model or setting recomputes exactly what it touches; models are
loaded only when a unit needs them. When the cores allow, the models with units left are evaluated side by side
(:mod:`overspec.unit_workers`) before the run reads every unit back in plan order.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path

import yaml
from tqdm.auto import tqdm

from overspec.config.model import CombineTerm
from overspec.config.run import RunConfig, resolved_dict
from overspec.config.typed import ConfigError
from overspec.errors import InputError
from overspec.evaluation import (PlannedUnit, RunContext, RunResult, Target, Unit, feature_store, planned_run,
                                 restore_threads, run_unit, skip_reason, use_threads)
from overspec.models import ModelSpec, resolve_spec
from overspec.protocols.base import GENERAL, planned_units, resolve_settings
from overspec.results import config_hash, write_csv, write_jsonl
from overspec.results.provenance import run_provenance
from overspec.unit_workers import evaluate_side_by_side
from overspec.files import atomic_write_text
from overspec.world.checks import checked_once
from overspec.progress import StageClock, bar_disabled, stage, stage_clock

logger = logging.getLogger(__name__)

__all__ = ["PlannedUnit", "PreflightError", "RunResult", "Target", "Unit", "plan_study", "planned_run", "run_study",
           "validated_settings"]


#: What general-vision units feed a fine-tune: its base model's preprocessing (CLIP_benchmark) or its own.
GENERAL_PREPROCESSING = ("base", "own")


class PreflightError(InputError):
    """Some model files or datasets of a run are missing; the message lists every one of them."""












def validated_settings(config: RunConfig, where: str = "") -> dict[str, object]:
    """Check what the config layer cannot (protocol settings, bad-image policy, fine-tune recipes) against the
    modules that implement them; return every protocol's typed settings.

    Errors are :class:`ConfigError` naming the key, prefixed with ``where`` (the config file) when given.
    """
    from overspec.features.store import BAD_IMAGE_POLICIES
    from overspec.finetune.schedule import recipe_config

    try:
        settings = resolve_settings(config.protocols)
        if config.general_preprocessing not in GENERAL_PREPROCESSING:
            raise ConfigError(f"general_preprocessing must be one of {GENERAL_PREPROCESSING}, got "
                              f"{config.general_preprocessing!r}")
        if config.on_bad_image not in BAD_IMAGE_POLICIES:
            raise ConfigError(f"on_bad_image must be one of {BAD_IMAGE_POLICIES}, got {config.on_bad_image!r}")
        for recipe in config.finetune.recipes:
            recipe_config(config, recipe)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}" if where else str(exc)) from None
    return settings




def _preprocessing_controls(context: RunContext, specs: list[ModelSpec]) -> list[ModelSpec]:
    """For each variant whose own preprocessing differs from its base's: the base fed the variant's preprocessing
    on general data, so the report can split a variant's general loss into a preprocessing part and a weights part."""
    controls = []
    for spec in specs:
        base = context.specs.get(spec.base or "")
        own = context.own_preprocess(spec) if base is not None else None
        if own is None or own == context.own_preprocess(base):
            continue
        controls.append(dataclasses.replace(base, name=f"{base.name}~{spec.name}-preprocess", general_preprocess=own,
                                            options={**base.options, "control_of": spec.name}))
    return controls


def run_study(config: RunConfig, reuse_from: Sequence[Path] = ()) -> RunResult:
    """Run every unit of ``config`` (reusing finished ones, here or in the runs of ``reuse_from``) and write
    results, provenance and a summary.

    Generated world content (datasets, tiny-CLIP weights) is hashed once per run, not at every model that uses it.
    """
    try:
        with checked_once(), stage_clock() as clock:
            return _run_study(config, clock, reuse_from)
    finally:
        restore_threads()


def _run_study(config: RunConfig, clock: StageClock, reuse_from: Sequence[Path]) -> RunResult:
    """The body of :func:`run_study`, run inside one scope of world-content checks, timed stage by stage."""
    start = time.perf_counter()
    settings = validated_settings(config)
    data_root, datasets, benchmarks = prepare_data(config)
    context = RunContext(config, data_root, feature_store(config), reuse_from)
    specs = [resolve_spec(m) for m in config.models]
    _preflight(context, specs, datasets, benchmarks)
    run_dir = config.run_dir
    (run_dir / "units").mkdir(parents=True, exist_ok=True)
    if config.finetune.recipes:
        from overspec.finetune.schedule import with_finetuned_variants

        use_threads(config)
        specs = with_finetuned_variants(config, specs, data_root)
    specs = _with_resolved_terms(specs)
    context.specs = {spec.name: spec for spec in specs}
    controls = _preprocessing_controls(context, specs) if config.preprocessing_controls else []
    chash = config_hash(resolved_dict(config))
    result = RunResult(run_dir, [], models=specs, stages=clock, worker_stages=context.worker_stages)
    units = planned_run(config, settings, specs, datasets, benchmarks, controls)
    evaluate_side_by_side(context, units, settings, chash, controls, datasets, benchmarks)
    for planned in tqdm(units, desc=f"run {config.name}", unit="unit", disable=bar_disabled(config.progress)):
        reason = skip_reason(context, planned)
        if reason:
            result.skipped.append((planned.unit.slug, reason))
            continue
        result.records.extend(run_unit(context, planned, settings, chash, result))
    result.seconds = time.perf_counter() - start
    with stage("write results"):
        _write_outputs(config, context, result, chash, specs + controls, datasets + benchmarks)
    return result


def prepare_data(config: RunConfig) -> tuple[Path, list[str], list[str]]:
    """Return the data root, the general datasets and the biometric benchmarks of the run (validated names)."""
    from overspec.data.biometric.benchmarks import biometric_registry
    from overspec.data.catalog import dataset_registry

    register_user_catalogs(config)
    data_root, names, benchmarks = _selection(config)
    for name in names:
        dataset_registry().get(name)
    for name in benchmarks:
        biometric_registry().get(name)
    if config.world:
        from overspec.finetune.schedule import prepare_world

        data_root = prepare_world(config, data_root)  # the seed's own data root, holding the world/ roots
    return data_root, names, benchmarks


def register_user_catalogs(config: RunConfig) -> None:
    """Register the run's own catalog files: ``dataset_files`` (general datasets) and ``benchmark_files``."""
    from overspec.data.catalog import register_user_dataset

    for path in config.dataset_files:
        register_user_dataset(Path(path).expanduser())
    _register_user_benchmarks(config)


def _selection(config: RunConfig) -> tuple[Path, list[str], list[str]]:
    """The data root, datasets and biometric benchmarks a config names; in world mode an unset list means every
    world one and an explicit empty list means none."""
    from overspec.data.biometric.benchmarks import biometric_registry
    from overspec.data.catalog import dataset_registry

    if not config.world:
        if not config.data_root:
            raise ConfigError("data_root is required unless world: true (the embedded world)")
        return Path(config.data_root).expanduser(), list(config.datasets or ()), list(config.biometrics or ())
    data_root = Path(config.data_root).expanduser() if config.data_root else config.cache_path / "world-data"
    datasets = list(config.datasets) if config.datasets is not None else \
        [n for n in dataset_registry().names() if dataset_registry().get(n).root.startswith("world/")]
    benchmarks = list(config.biometrics) if config.biometrics is not None else \
        [n for n in biometric_registry().names() if biometric_registry().get(n).root.startswith("world/")]
    return data_root, datasets, benchmarks


def _preflight(context: RunContext, specs: list[ModelSpec], datasets: list[str], benchmarks: list[str]) -> None:
    """Check every weights file and dataset split before any computation; report all problems at once."""
    from overspec.data.biometric.benchmarks import benchmark_status, biometric_registry
    from overspec.models.sources.files import spec_problems

    problems = []
    for spec in specs:
        problems += [f"model {spec.name!r}: {p}" for p in spec_problems(spec, context.config.cache_path)]
    for name in datasets:
        try:
            context.opened(Target(name, GENERAL, None))
        except (FileNotFoundError, ValueError) as exc:
            problems.append(str(exc).replace("\n", " "))
    for name in benchmarks:
        present, detail = benchmark_status(biometric_registry().get(name), context.data_root)
        if not present:
            problems.append(f"biometric benchmark {name!r}: {detail}")
    if problems:
        listed = "; ".join(f"({i}) {problem}" for i, problem in enumerate(problems, 1))
        raise PreflightError(f"{len(problems)} problem(s) before running: {listed}")


def plan_study(config: RunConfig) -> tuple[str, list[str]]:
    """Describe what ``run_study(config)`` would do without computing; return the text and the problems found."""
    from overspec.data.biometric.benchmarks import benchmark_status, biometric_registry
    from overspec.data.catalog import dataset_registry, dataset_status, register_user_dataset
    from overspec.finetune.schedule import finetune_folder, recipe_config
    from overspec.models.sources.files import spec_problems

    settings = validated_settings(config)
    for path in config.dataset_files:
        register_user_dataset(Path(path).expanduser())
    data_root, datasets, benchmarks = _selection(config)
    if config.world:
        from overspec.world import seed_root

        data_root = seed_root(data_root, config.seed)
    specs = [resolve_spec(m) for m in config.models]
    lines = [f"plan for run {config.name!r} -> {config.run_dir}", f"data root: {data_root}"]
    lines += _register_user_benchmarks(config)
    problems = [f"model {s.name!r}: {p}" for s in specs for p in spec_problems(s, config.cache_path)]
    if not (config.world and not data_root.exists()):
        problems += [f"dataset {n!r}: {d}" for n in datasets
                     for ok, d in [dataset_status(dataset_registry().get(n), data_root)] if not ok]
        problems += [f"biometric benchmark {n!r}: {d}" for n in benchmarks
                     for ok, d in [benchmark_status(biometric_registry().get(n), data_root)] if not ok]
    else:
        lines.append("the embedded world will be generated first")
    lines.append(f"problems ({len(problems)}):" if problems else "problems: none")
    lines += [f"  - {p}" for p in problems]
    bases = [s for s in specs if not s.base]
    for recipe in config.finetune.recipes:
        chosen = recipe_config(config, recipe)
        for spec in bases:
            folder = finetune_folder(config, spec, recipe, chosen)
            state = "cached" if (folder / "model.yaml").is_file() else "to train"
            lines.append(f"fine-tune {spec.name} with {recipe}: {state} ({folder})")
    n_models = len(specs) + len(bases) * len(config.finetune.recipes)
    n_variants = len(specs) - len(bases) + len(bases) * len(config.finetune.recipes)
    kinds = [GENERAL] * len(datasets) + [biometric_registry().get(b).kind for b in benchmarks]
    per_model = [sum(not plan.needs.base for _, plan in planned_units(settings, kind)) for kind in kinds]
    compared = sum(plan.needs.base for kind in kinds for _, plan in planned_units(settings, kind))
    n_general, n_bio = sum(per_model[:len(datasets)]), sum(per_model[len(datasets):])
    done = len(list((config.run_dir / "units").glob("*.json"))) if (config.run_dir / "units").is_dir() else 0
    lines.append(f"units: {n_models} models x ({n_general} general + {n_bio} biometric)"
                 + (f" + {n_variants} fine-tunes x {compared} comparisons with their base" if compared and n_variants
                    else "")
                 + f" = {n_models * (n_general + n_bio) + n_variants * compared} (at most; {done} unit files "
                 "already present and reused if their keys still match)")
    lines.append(f"models: {', '.join(s.name for s in specs)}"
                 + (f" + {len(bases) * len(config.finetune.recipes)} fine-tunes" if config.finetune.recipes else ""))
    lines.append("per unit: model | dataset | unit | preprocessing | splits | metric | rule")
    lines += [_unit_line(config, planned) for planned in planned_run(config, settings, specs, datasets, benchmarks)]
    return "\n".join(lines), problems


def _unit_line(config: RunConfig, planned: PlannedUnit) -> str:
    """What one unit will use, as the dry run shows it: where its preprocessing comes from, the splits it reads,
    the metric its tables show and the rules behind its numbers."""
    from overspec.data.catalog import dataset_registry

    spec, target, plan, report = planned.spec, planned.target, planned.plan, planned.protocol.report
    base = spec.base if spec.base in {s if isinstance(s, str) else s.name for s in config.models} else None
    if target.kind != GENERAL:
        preprocess, splits = "own", "every split of the benchmark"
        metric = (planned.protocol.headline(plan.name) or (report.metric,))[0]
    else:
        entry = dataset_registry().get(target.name)
        preprocess = ("spec general_preprocess" if spec.general_preprocess else
                      f"base {base}" if base and config.general_preprocessing == "base" else "own")
        carved = " (carved)" if "carve_split" in entry.options else ""
        scored = plan.needs.evaluate_on if plan.needs.evaluate_on in entry.splits else "test"
        splits = (scored + (f", train{' + val' if 'val' in entry.splits else ''} for fitting" if
                            plan.needs.train_split else "")) + carved
        metric = entry.main_metric
    return f"  {spec.name} | {target.name} | {plan.name} | {preprocess} | {splits} | {metric} | {report.rule or '-'}"


def _with_resolved_terms(specs: list[ModelSpec]) -> list[ModelSpec]:
    """Return ``specs`` with every combination term that names a model of the run replaced by that model's spec.

    A name that is neither a model of the run (fine-tunes included) nor a preset is an error naming the term.
    """
    from overspec.models.registry import model_presets

    by_name = {spec.name: spec for spec in specs}

    def resolved(spec: ModelSpec, term: CombineTerm) -> CombineTerm:
        if not isinstance(term.model, str):
            return term
        if term.model in by_name:
            return dataclasses.replace(term, model=by_name[term.model])
        if term.model in model_presets():
            return dataclasses.replace(term, model=model_presets().get(term.model))
        raise InputError(f"model {spec.name!r}: combine term {term.model!r} is neither a model of this run "
                         f"({', '.join(by_name)}) nor a preset")

    return [dataclasses.replace(spec, combine=tuple(resolved(spec, t) for t in spec.combine)) if spec.combine else spec
            for spec in specs]


def _register_user_benchmarks(config: RunConfig) -> list[str]:
    """Register the run's ``benchmark_files`` (again: a no-op) and return one plan line per entry."""
    from overspec.data.biometric.benchmarks import register_benchmark_file

    entries = [register_benchmark_file(path) for path in config.benchmark_files]
    return [f"benchmark file {e.origin}: {e.name} ({e.kind}, {e.format}) at {e.root}"
            + ("" if e.name in (config.biometrics or ()) else " (not listed in biometrics: not run)") for e in entries]










def _main_metrics(names: list[str]) -> dict[str, str]:
    """The catalog's main metric of each general dataset among ``names`` (the report's tables and GELO use it)."""
    from overspec.data.catalog import dataset_registry

    return {name: dataset_registry().get(name).main_metric for name in names if name in dataset_registry()}


def _write_outputs(config: RunConfig, context: RunContext, result: RunResult, chash: str, specs: list[ModelSpec],
                   datasets: list[str]) -> None:
    from overspec.report.summary import summary_markdown

    run_dir = config.run_dir
    write_jsonl(run_dir / "results.jsonl", result.records)
    write_csv(run_dir / "results.csv", result.records)
    atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(json.loads(json.dumps(resolved_dict(config),
                                                                                   default=str)), sort_keys=True))
    provenance = run_provenance(
        chash=chash, records=result.records, specs=specs, datasets=datasets, main_metrics=_main_metrics(datasets),
        image_parameters={s.name: context.facts(s).image_parameters for s in specs}, unit_costs=result.unit_costs,
        units={"computed": result.computed, "reused": result.reused,
               "skipped": [{"unit": u, "reason": why} for u, why in result.skipped]},
        timings={"seconds": round(result.seconds, 3), "units": result.unit_seconds, "stages": result.stages.table(),
                 **({"worker_stages": result.worker_stages.table()} if result.worker_stages.cpu else {})})
    atomic_write_text(run_dir / "provenance.json", json.dumps(provenance, indent=1, sort_keys=True))
    atomic_write_text(run_dir / "summary.md", summary_markdown(result.records, [s.name for s in specs], datasets,
                                                              skipped=result.skipped))
