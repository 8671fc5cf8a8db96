"""A run's units: what each one is (model × dataset or benchmark × protocol plan), the shared context that loads
models and opens data once, the key a unit's records are stored under, and computing or reusing one unit.

Each unit's records are written atomically to ``<run>/units/`` under a key made of everything that determines
them (model and split fingerprints, protocol settings, seed), so a killed run resumes with only the missing units,
and a changed model or setting recomputes exactly what it touches. A unit finished under the same key by another
run named in ``reuse_from`` (a sweep's study) is copied, not recomputed.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from overspec.config.model import PreprocessSpec
from overspec.config.run import RunConfig
from overspec.config.typed import from_dict
from overspec.features.store import FeatureStore, ModelFeatures
from overspec.files import atomic_write_bytes, atomic_write_text, combine
from overspec.models import Encoder, ModelSpec, load_model
from overspec.models.identity import ModelFacts, model_identity, read_facts, write_facts
from overspec.models.preprocess import preprocess_fingerprint, with_preprocess
from overspec.protocols.base import GENERAL, Protocol, UnitPlan, planned_units
from overspec.protocols.inputs import ComparedSources, compute_unit
from overspec.results import Record
from overspec.results.units import (save_predictions, save_unit_seconds, stored_records, stored_unit_seconds,
                                    unit_file_text)
from overspec.progress import StageClock, stage

logger = logging.getLogger(__name__)

__all__ = ["PlannedUnit", "RunContext", "RunResult", "Target", "Unit", "feature_store", "model_tasks", "planned_run",
           "preprocess_label", "restore_threads", "run_unit", "skip_reason", "stored_unit", "unit_files", "unit_key",
           "use_threads"]


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
    worker_stages: StageClock = field(default_factory=StageClock)  # inside the processes that evaluated models


class RunContext:
    """Lazily loaded models and opened datasets / benchmarks shared by the units of one run."""

    def __init__(self, config: RunConfig, data_root: Path, store: FeatureStore,
                 reuse_from: Sequence[Path] = ()) -> None:
        self.config, self.data_root, self.store = config, data_root, store
        self.reuse_from = tuple(Path(run) for run in reuse_from)
        self._models: dict[str, Encoder] = {}
        self._facts: dict[str, ModelFacts] = {}
        self._identities: dict[str, str | None] = {}
        self._opened: dict[str, object] = {}
        self.specs: dict[str, ModelSpec] = {}
        self.computed_elsewhere: dict[str, float] = {}  # unit slug -> seconds, for units other processes computed
        self.worker_stages = StageClock()  # where those processes' time went
        self.found: dict[tuple[str, str], list[dict]] = {}  # (slug, key) -> records already read and verified

    def model(self, spec: ModelSpec) -> Encoder:
        """Load a model once per run and record its facts under its identity (a disagreement is reported)."""
        if spec.name not in self._models:
            use_threads(self.config)
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
        if not self.facts_known(spec):
            self.model(spec)  # records the loaded model's facts
        return self._facts[spec.name]

    def facts_known(self, spec: ModelSpec) -> bool:
        """Whether the model's facts are at hand without loading it (loaded here, or recorded and current: then
        kept)."""
        if spec.name not in self._facts:
            identity = self._identity(spec)
            recorded = read_facts(self.config.cache_path, identity) if identity is not None else None
            if recorded is None:
                return False
            self._facts[spec.name] = recorded
        return True

    def unload(self) -> None:
        """Forget the loaded models (their facts stay): a worker that moves on to the next model frees the last."""
        self._models.clear()

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


def planned_run(config: RunConfig, settings: dict[str, object], specs: list[ModelSpec], datasets: list[str],
                benchmarks: list[str], controls: list[ModelSpec] = ()) -> list[PlannedUnit]:
    """Every unit of the run, in result order: general datasets for every model (then every preprocessing control)
    first, then biometric benchmarks for every model (under ``biometric_scope: own``, those of its own tasks)."""
    from overspec.data.biometric.benchmarks import biometric_registry

    general = [Target(name, GENERAL, None) for name in datasets]
    biometric = [Target(name, entry.kind, entry) for name in benchmarks
                 for entry in [biometric_registry().get(name)]]
    return [PlannedUnit(spec, target, protocol, plan)
            for group, models in ((general, [*specs, *controls]), (biometric, specs)) for spec in models
            for target in group if target.kind == GENERAL or _in_scope(config, spec, target.kind)
            for protocol, plan in planned_units(settings, target.kind)
            if spec.base or not plan.needs.base]  # a comparison with the base is planned for fine-tunes only


def model_tasks(spec: ModelSpec) -> tuple[str, ...]:
    """The specialisations a model carries: its own, else those of its combination's terms (a merged model's), in
    task order; none for a base."""
    from overspec.data.biometric.benchmarks import TASK_KINDS

    named = {spec.specialisation} if spec.specialisation else {
        term.model.specialisation for term in spec.combine if isinstance(term.model, ModelSpec)}
    return tuple(task for task in TASK_KINDS if task in named)


def _in_scope(config: RunConfig, spec: ModelSpec, kind: str) -> bool:
    """Whether the run evaluates ``spec`` on a benchmark of ``kind``: always under ``biometric_scope: all``; under
    ``own``, when the model has no task (a base) or one of its tasks is measured by that kind."""
    from overspec.data.biometric.benchmarks import TASK_KINDS

    tasks = model_tasks(spec)
    return config.biometric_scope == "all" or not tasks or any(kind in TASK_KINDS[task] for task in tasks)


#: torch's CPU thread count before the run under way set its own (empty otherwise).
_THREADS_BEFORE: list[int] = []


def use_threads(config: RunConfig) -> None:
    """Run torch on ``config.threads`` CPU threads until the run ends (0: keep torch's setting); called where the
    run first needs torch, so a run that computes nothing does not import it."""
    if not config.threads or _THREADS_BEFORE:
        return
    import torch

    _THREADS_BEFORE.append(torch.get_num_threads())
    torch.set_num_threads(config.threads)


def restore_threads() -> None:
    """Give torch back the thread count it had before the run (nothing when the run set none)."""
    if _THREADS_BEFORE:
        import torch

        torch.set_num_threads(_THREADS_BEFORE.pop())


def skip_reason(context: RunContext, planned: PlannedUnit) -> str:
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


def unit_key(context: RunContext, planned: PlannedUnit) -> str:
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


def run_unit(context: RunContext, planned: PlannedUnit, settings: dict[str, object], chash: str,
             result: RunResult) -> list[Record]:
    """The unit's records: stored ones when its key still matches (here, or copied from a run of
    ``context.reuse_from``), else computed by its protocol and stored."""
    unit, spec, config = planned.unit, planned.spec, context.config
    path, predictions_path, seconds_path = unit_files(config.run_dir, unit.slug)
    key = unit_key(context, planned)
    stored = stored_unit(context, unit.slug, key)
    if stored is not None:
        if unit.slug in context.computed_elsewhere:  # by a worker of this run
            result.computed.append(unit.slug)
            result.unit_seconds[unit.slug] = context.computed_elsewhere[unit.slug]
        else:
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
    preprocess = preprocess_label(context, spec, kind)
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


def feature_store(config: RunConfig, progress: bool | None = None) -> FeatureStore:
    """The run's feature store (progress bars as the run asks unless ``progress`` says otherwise)."""
    return FeatureStore(config.cache_path / "features", batch_size=config.batch_size, num_workers=config.num_workers,
                        device=config.device, progress=config.progress if progress is None else progress,
                        on_bad_image=config.on_bad_image)


def unit_files(run_dir: Path, slug: str) -> tuple[Path, Path, Path]:
    """Where a unit of ``run_dir`` keeps its records, its predictions and its compute seconds."""
    return (run_dir / "units" / f"{slug}.json", run_dir / "predictions" / f"{slug}.npz",
            run_dir / "timings" / f"{slug}.json")


def stored_unit(context: RunContext, slug: str, key: str) -> list[dict] | None:
    """Records of unit ``slug`` stored under ``key`` in this run, or in a run of ``context.reuse_from`` (its files
    are then copied into this run, so the run stays whole on its own); None when neither has it."""
    if (slug, key) in context.found:
        return context.found[slug, key]
    here = unit_files(context.config.run_dir, slug)
    stored = stored_records(here[0], key, here[1])
    if stored is not None:
        context.found[slug, key] = stored
        return stored
    for run in context.reuse_from:
        there = unit_files(run, slug)
        stored = stored_records(there[0], key, there[1])
        if stored is None:
            continue
        for source, target in reversed(list(zip(there, here))):  # the records last: their file marks a whole unit
            if source.is_file():
                atomic_write_bytes(target, source.read_bytes())
        logger.debug("unit %s reused from run %s", slug, run)
        context.found[slug, key] = stored
        return stored
    return None


def preprocess_label(context: RunContext, spec: ModelSpec, kind: str) -> dict:
    """What a unit's records say of the preprocessing it fed the model: where it came from and its settings."""
    chosen, source = context.preprocess_for(spec, kind)
    described = asdict(chosen) if chosen is not None else context.facts(spec).preprocess
    return {"from": source, **json.loads(json.dumps(described or {}))}
