"""Run a study: every model × dataset × protocol as a resumable unit, then tidy results and a summary.

Each unit's records are written atomically to ``<run>/units/`` under a key made of everything that determines
them (model and split fingerprints, protocol settings, seed), so a killed run resumes with only the missing units,
and a changed model or setting recomputes exactly what it touches. Models are loaded only when a unit needs them.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml
from tqdm.auto import tqdm

from overspec.config.model import CombineTerm, PreprocessSpec
from overspec.config.run import RunConfig, resolved_dict
from overspec.config.typed import ConfigError, from_dict
from overspec.errors import InputError
from overspec.features.store import FeatureStore, ModelFeatures
from overspec.files import atomic_write_text, combine
from overspec.models import Encoder, ModelSpec, load_model, resolve_spec
from overspec.models.identity import ModelFacts, model_identity, read_facts, write_facts
from overspec.models.preprocess import preprocess_fingerprint, with_preprocess
from overspec.protocols.base import GENERAL, Protocol, UnitPlan, planned_units, resolve_settings
from overspec.protocols.inputs import ComparedSources, compute_unit
from overspec.results import Record, config_hash, write_csv, write_jsonl
from overspec.results.provenance import run_provenance
from overspec.results.units import (save_predictions, save_unit_seconds, stored_records, stored_unit_seconds,
                                    unit_file_text)
from overspec.world.checks import checked_once
from overspec.progress import StageClock, bar_disabled, stage, stage_clock

logger = logging.getLogger(__name__)

__all__ = ["PlannedUnit", "PreflightError", "RunResult", "Target", "Unit", "plan_study", "planned_run", "run_study",
           "validated_settings"]


#: What general-vision units feed a fine-tune: its base model's preprocessing (CLIP_benchmark) or its own.
GENERAL_PREPROCESSING = ("base", "own")


class PreflightError(InputError):
    """Some model files or datasets of a run are missing; the message lists every one of them."""


@dataclass(frozen=True)
class Unit:
    """One resumable piece of work: a protocol applied to one model on one dataset."""

    model: str
    dataset: str
    protocol: str

    @property
    def slug(self) -> str:
        """File-name-safe identifier of the unit."""
        return "__".join(part.replace("/", "-") for part in (self.model, self.dataset, self.protocol))


@dataclass
class RunResult:
    """What a finished run produced: records, the run folder, units computed vs reused, skipped units with why, and
    the specs of its models (fine-tunes the run made included)."""

    run_dir: Path
    records: list[Record]
    computed: list[str] = field(default_factory=list)
    unit_seconds: dict[str, float] = field(default_factory=dict)
    unit_costs: dict[str, tuple[str, float]] = field(default_factory=dict)
    reused: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    models: list[ModelSpec] = field(default_factory=list)
    stages: StageClock = field(default_factory=StageClock)


class _Context:
    """Lazily loaded models and opened datasets / benchmarks shared by the units of one run."""

    def __init__(self, config: RunConfig, data_root: Path, store: FeatureStore) -> None:
        self.config, self.data_root, self.store = config, data_root, store
        self._models: dict[str, Encoder] = {}
        self._facts: dict[str, ModelFacts] = {}
        self._identities: dict[str, str | None] = {}
        self._opened: dict[str, object] = {}
        self.specs: dict[str, ModelSpec] = {}

    def model(self, spec: ModelSpec) -> Encoder:
        """Load a model once per run and record its facts under its identity (a disagreement is reported)."""
        if spec.name not in self._models:
            _use_threads(self.config)
            with stage("load models"):
                encoder = load_model(spec, cache_dir=self.config.cache_path, device=self.config.device)
            self._models[spec.name] = encoder
            facts, recorded = ModelFacts.of(encoder), self._facts.get(spec.name)
            if recorded is not None and recorded != facts:
                logger.warning("model %r: recorded facts %s differ from the loaded model's %s; using the loaded "
                               "model's", spec.name, recorded, facts)
            self._facts[spec.name] = facts
            identity = self._identity(spec)
            if identity is not None and recorded != facts:
                write_facts(self.config.cache_path, identity, facts)
        return self._models[spec.name]

    def facts(self, spec: ModelSpec) -> ModelFacts:
        """Fingerprints and size of a model: recorded ones when its spec and files are unchanged, else loaded."""
        if spec.name not in self._facts:
            identity = self._identity(spec)
            recorded = read_facts(self.config.cache_path, identity) if identity is not None else None
            if recorded is None:
                self.model(spec)  # records the loaded model's facts
            else:
                self._facts[spec.name] = recorded
        return self._facts[spec.name]

    def _identity(self, spec: ModelSpec) -> str | None:
        if spec.name not in self._identities:
            self._identities[spec.name] = model_identity(spec, self.config.cache_path)
        return self._identities[spec.name]

    def own_preprocess(self, spec: ModelSpec) -> PreprocessSpec | None:
        """The preprocessing a model feeds itself (from its recorded facts when they are current)."""
        described = self.facts(spec).preprocess
        return None if described is None else from_dict(PreprocessSpec, described, where=f"model {spec.name!r}")

    def preprocess_for(self, spec: ModelSpec, kind: str) -> tuple[PreprocessSpec | None, str]:
        """The preprocessing a unit of ``kind`` feeds ``spec`` (None: the model's own) and where it comes from.

        Biometric units feed each model its own (released) profile. General units feed the spec's
        ``general_preprocess`` when it names one, else (``general_preprocessing: base``) the base model's, as
        CLIP_benchmark feeds every model the base CLIP's transform, so a variant's general numbers differ from its
        base's only through its weights.
        """
        if kind != GENERAL:
            return None, "own"
        chosen, source = spec.general_preprocess, "spec general_preprocess"
        base = self.specs.get(spec.base or "")
        if chosen is None and base is not None and self.config.general_preprocessing == "base":
            chosen, source = self.own_preprocess(base), f"base {base.name}"
        if chosen is None or chosen == self.own_preprocess(spec):
            return None, "own"
        return chosen, source

    def features(self, spec: ModelSpec, kind: str) -> ModelFeatures:
        """The model's view of the feature store for a unit of ``kind`` (the model is loaded on first use)."""
        chosen, _ = self.preprocess_for(spec, kind)
        if chosen is None:
            return ModelFeatures(self.store, lambda: self.model(spec))
        return ModelFeatures(self.store, lambda: with_preprocess(self.model(spec), chosen))

    def opened(self, target: Target):
        """A general dataset's splits or a biometric benchmark's typed opened form, opened once per run."""
        if target.name not in self._opened:
            from overspec.data.biometric.benchmarks import open_benchmark
            from overspec.data.catalog import open_dataset

            self._opened[target.name] = (open_dataset(target.name, self.data_root) if target.kind == GENERAL
                                         else open_benchmark(target.entry, self.data_root))
        return self._opened[target.name]


@dataclass(frozen=True)
class Target:
    """A general dataset (kind ``general``) or a biometric benchmark (kind = its benchmark kind) of the run."""

    name: str
    kind: str
    entry: object


@dataclass(frozen=True)
class PlannedUnit:
    """A unit of the run: which model, on which target, by which protocol, as planned by that protocol."""

    spec: ModelSpec
    target: Target
    protocol: Protocol
    plan: UnitPlan

    @property
    def unit(self) -> Unit:
        """The unit's identity (model, dataset, record protocol name)."""
        return Unit(self.spec.name, self.target.name, self.plan.name)


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


def planned_run(config: RunConfig, settings: dict[str, object], specs: list[ModelSpec], datasets: list[str],
                benchmarks: list[str], controls: list[ModelSpec] = ()) -> list[PlannedUnit]:
    """Every unit of the run, in result order: general datasets for every model (then every preprocessing control)
    first, then biometric benchmarks for every model."""
    from overspec.data.biometric.benchmarks import biometric_registry

    general = [Target(name, GENERAL, None) for name in datasets]
    biometric = [Target(name, entry.kind, entry) for name in benchmarks
                 for entry in [biometric_registry().get(name)]]
    return [PlannedUnit(spec, target, protocol, plan)
            for group, models in ((general, [*specs, *controls]), (biometric, specs)) for spec in models
            for target in group for protocol, plan in planned_units(settings, target.kind)
            if spec.base or not plan.needs.base]  # a comparison with the base is planned for fine-tunes only


def _preprocessing_controls(context: _Context, specs: list[ModelSpec]) -> list[ModelSpec]:
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


def run_study(config: RunConfig) -> RunResult:
    """Run every unit of ``config`` (reusing finished ones) and write results, provenance and a summary.

    Generated world content (datasets, tiny-CLIP weights) is hashed once per run, not at every model that uses it.
    """
    try:
        with checked_once(), stage_clock() as clock:
            return _run_study(config, clock)
    finally:
        _restore_threads()


#: torch's CPU thread count before the run under way set its own (empty otherwise).
_THREADS_BEFORE: list[int] = []


def _use_threads(config: RunConfig) -> None:
    """Run torch on ``config.threads`` CPU threads until the run ends (0: keep torch's setting); called where the
    run first needs torch, so a run that computes nothing does not import it."""
    if not config.threads or _THREADS_BEFORE:
        return
    import torch

    _THREADS_BEFORE.append(torch.get_num_threads())
    torch.set_num_threads(config.threads)


def _restore_threads() -> None:
    """Give torch back the thread count it had before the run (nothing when the run set none)."""
    if _THREADS_BEFORE:
        import torch

        torch.set_num_threads(_THREADS_BEFORE.pop())


def _run_study(config: RunConfig, clock: StageClock) -> RunResult:
    """The body of :func:`run_study`, run inside one scope of world-content checks, timed stage by stage."""
    start = time.perf_counter()
    settings = validated_settings(config)
    data_root, datasets, benchmarks = _prepare_data(config)
    store = FeatureStore(config.cache_path / "features", batch_size=config.batch_size,
                         num_workers=config.num_workers, device=config.device, progress=config.progress,
                         on_bad_image=config.on_bad_image)
    context = _Context(config, data_root, store)
    specs = [resolve_spec(m) for m in config.models]
    _preflight(context, specs, datasets, benchmarks)
    run_dir = config.run_dir
    (run_dir / "units").mkdir(parents=True, exist_ok=True)
    if config.finetune.recipes:
        from overspec.finetune.schedule import with_finetuned_variants

        _use_threads(config)
        specs = with_finetuned_variants(config, specs, data_root)
    specs = _with_resolved_terms(specs)
    context.specs = {spec.name: spec for spec in specs}
    controls = _preprocessing_controls(context, specs)
    chash = config_hash(resolved_dict(config))
    result = RunResult(run_dir, [], models=specs, stages=clock)
    units = planned_run(config, settings, specs, datasets, benchmarks, controls)
    for planned in tqdm(units, desc=f"run {config.name}", unit="unit", disable=bar_disabled(config.progress)):
        reason = _skip_reason(context, planned)
        if reason:
            result.skipped.append((planned.unit.slug, reason))
            continue
        result.records.extend(_run_unit(context, planned, settings, chash, result))
    result.seconds = time.perf_counter() - start
    with stage("write results"):
        _write_outputs(config, context, result, chash, specs + controls, datasets + benchmarks)
    return result


def _prepare_data(config: RunConfig) -> tuple[Path, list[str], list[str]]:
    """Return the data root, the general datasets and the biometric benchmarks of the run (validated names)."""
    from overspec.data.biometric.benchmarks import biometric_registry
    from overspec.data.catalog import dataset_registry, register_user_dataset

    for path in config.dataset_files:
        register_user_dataset(Path(path).expanduser())
    _register_user_benchmarks(config)
    data_root, names, benchmarks = _selection(config)
    for name in names:
        dataset_registry().get(name)
    for name in benchmarks:
        biometric_registry().get(name)
    if config.world:
        from overspec.finetune.schedule import prepare_world

        data_root = prepare_world(config, data_root)  # the seed's own data root, holding the world/ roots
    return data_root, names, benchmarks


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


def _preflight(context: _Context, specs: list[ModelSpec], datasets: list[str], benchmarks: list[str]) -> None:
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


def _skip_reason(context: _Context, planned: PlannedUnit) -> str:
    """Why a unit does not apply (its dataset or benchmark lacks the task or a train split, its model the text tower
    or a head), or ''; the reasons follow from what the unit's protocol declares it needs."""
    from overspec.data.catalog import dataset_registry, has_role

    needs, spec, dataset, what = planned.plan.needs, planned.spec, planned.target.name, planned.plan.label
    entry = dataset_registry().get(dataset) if planned.target.kind == GENERAL else None
    if entry is None and needs.train_split and "train" not in context.opened(planned.target).splits():
        return f"{dataset} has no training split: {what} not applicable"
    if entry is not None and needs.task and needs.task not in entry.tasks:
        return f"{dataset} does not declare task {needs.task}"
    if needs.text_tower and not spec.text:
        return f"{spec.name} is image-only (no text tower): {what} not applicable"
    if needs.head and not spec.head:
        return f"{spec.name} has no binary head: {what} not applicable"
    if needs.base and spec.base not in context.specs:
        return f"{spec.name} is not a fine-tune of a model of this run: {what} not applicable"
    if entry is not None and needs.train_split and not has_role(entry, "train"):
        return f"{dataset} has no training split: {what} not applicable"
    return ""


def _unit_key(context: _Context, planned: PlannedUnit) -> str:
    """Everything a unit's records depend on: model and split fingerprints, the unit's declared settings, seed."""
    facts = context.facts(planned.spec)
    splits = context.opened(planned.target).splits()
    if planned.target.kind == GENERAL:
        split_fps = [split.fingerprint for split in splits.values()]
    else:
        split_fps = [f"{name}={split.fingerprint}" for name, split in sorted(splits.items())]
    chosen, _ = context.preprocess_for(planned.spec, planned.target.kind)
    preprocess = "own" if chosen is None else preprocess_fingerprint(chosen)
    compared = []
    if planned.plan.needs.base:  # the base's features enter the unit too
        base = context.specs[planned.spec.base]
        base_chosen, _ = context.preprocess_for(base, planned.target.kind)
        compared = [context.facts(base).fingerprint, "own" if base_chosen is None else preprocess_fingerprint(
            base_chosen)]
    return combine("unit-v2", planned.plan.name, facts.fingerprint, str(facts.text_fingerprint), preprocess,
                   *split_fps, json.dumps(dict(planned.plan.settings), sort_keys=True), str(context.config.seed),
                   *compared)


def _run_unit(context: _Context, planned: PlannedUnit, settings: dict[str, object], chash: str,
              result: RunResult) -> list[Record]:
    """The unit's records: stored ones when its key still matches, else computed by its protocol and stored."""
    unit, spec, config = planned.unit, planned.spec, context.config
    path = config.run_dir / "units" / f"{unit.slug}.json"
    predictions_path = config.run_dir / "predictions" / f"{unit.slug}.npz"
    key = _unit_key(context, planned)
    seconds_path = config.run_dir / "timings" / f"{unit.slug}.json"
    stored = stored_records(path, key, predictions_path)
    if stored is not None:
        result.reused.append(unit.slug)
        if (seconds := stored_unit_seconds(seconds_path)) is not None:
            result.unit_costs[unit.slug] = (spec.name, seconds)
        return [Record(**{**r, "run": config.name, "config_hash": chash}) for r in stored]
    started = time.perf_counter()
    kind = planned.target.kind
    source = context.features(spec, kind)
    if planned.plan.needs.base:
        source = ComparedSources(source, context.features(context.specs[spec.base], kind))
    with stage(f"protocol {planned.plan.name}"):
        output = compute_unit(planned.protocol, planned.plan, kind, context.opened(planned.target), source,
                              settings[planned.protocol.name], config.seed, config.device)
    encoder = context.model(spec)
    preprocess = _preprocess_label(context, spec, kind)
    records = [Record(run=config.name, model=spec.name, model_fingerprint=encoder.fingerprint,
                      dataset=unit.dataset, protocol=unit.protocol, config_hash=chash,
                      **{**row, "extra": {**row["extra"], "preprocess": preprocess}}) for row in output.rows]
    predictions_sha = save_predictions(predictions_path, output.predictions) if output.predictions else ""
    seconds = round(time.perf_counter() - started, 3)
    save_unit_seconds(seconds_path, seconds)
    atomic_write_text(path, unit_file_text(key, [asdict(r) for r in records], predictions_sha))
    result.computed.append(unit.slug)
    result.unit_seconds[unit.slug] = seconds
    result.unit_costs[unit.slug] = (spec.name, seconds)
    return records


def _preprocess_label(context: _Context, spec: ModelSpec, kind: str) -> dict:
    """What a unit's records say of the preprocessing it fed the model: where it came from and its settings."""
    chosen, source = context.preprocess_for(spec, kind)
    described = asdict(chosen) if chosen is not None else context.facts(spec).preprocess
    return {"from": source, **json.loads(json.dumps(described or {}))}


def _main_metrics(names: list[str]) -> dict[str, str]:
    """The catalog's main metric of each general dataset among ``names`` (the report's tables and GELO use it)."""
    from overspec.data.catalog import dataset_registry

    return {name: dataset_registry().get(name).main_metric for name in names if name in dataset_registry()}


def _write_outputs(config: RunConfig, context: _Context, result: RunResult, chash: str, specs: list[ModelSpec],
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
        timings={"seconds": round(result.seconds, 3), "units": result.unit_seconds, "stages": result.stages.table()})
    atomic_write_text(run_dir / "provenance.json", json.dumps(provenance, indent=1, sort_keys=True))
    atomic_write_text(run_dir / "summary.md", summary_markdown(result.records, [s.name for s in specs], datasets,
                                                              skipped=result.skipped))
