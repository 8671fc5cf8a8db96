"""Evaluate a run's models side by side, when the machine has the cores for it.

On CPU at a fixed thread count with cores to spare (:func:`~overspec.workers.independent_workers`), each model with a
unit still to compute is a job for a spawned process. The process builds the run's context once (data, feature
store, the run's specs and plan), then computes and stores that model's units exactly as the run's own process would:
the same code at the same thread count gives the same bytes. The run then reads every unit back in plan order, so
its results, provenance and summary do not depend on how the work was shared; units computed by a worker count as
computed, with the seconds the worker took, and the workers' stage clocks add up in ``context.worker_stages``.

Workers start from the code's own settings, as the fine-tune workers do: a test that patches module state (world
sizes, recipes) keeps ``threads: 0`` (or one core), so that every unit is computed in its own process.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path

from overspec.config.model import ModelSpec
from overspec.config.run import RunConfig
from overspec.evaluation import (PlannedUnit, RunContext, RunResult, feature_store, planned_run, run_unit,
                                 skip_reason, stored_unit, unit_key)
from overspec.progress import stage, stage_clock
from overspec.workers import Job, independent_workers, side_by_side

__all__ = ["evaluate_side_by_side", "models_to_evaluate"]

#: The run's context in a worker process, built once by :func:`_start_evaluation`.
_WORKER: dict = {}


def models_to_evaluate(context: RunContext, units: Sequence[PlannedUnit]) -> list[str]:
    """Names, in plan order, of the models with an applicable unit not stored under its current key (here or in a
    run the context reuses from). A model whose facts are not at hand counts without its keys being computed, since
    computing them would load it here."""
    todo: list[str] = []
    for planned in units:
        spec = planned.spec
        if spec.name in todo or skip_reason(context, planned):
            continue
        compared = [context.specs[spec.base]] if planned.plan.needs.base else []
        if not all(context.facts_known(s) for s in [spec, *compared]) or \
                stored_unit(context, planned.unit.slug, unit_key(context, planned)) is None:
            todo.append(spec.name)
    return todo


def evaluate_side_by_side(context: RunContext, units: Sequence[PlannedUnit], settings: dict[str, object],
                          chash: str, controls: Sequence[ModelSpec], datasets: Sequence[str],
                          benchmarks: Sequence[str]) -> None:
    """Compute the units of the models with work left in spawned processes when the cores allow two or more and
    two or more models have work (stage ``evaluate (N processes)``); record in ``context.computed_elsewhere`` the
    seconds of each unit they computed. Nothing happens otherwise: the run computes its units itself."""
    config = context.config
    workers = independent_workers(config)
    if workers < 2:
        return
    todo = models_to_evaluate(context, units)
    if len(todo) < 2:
        return
    workers = min(workers, len(todo))
    label = f"evaluate ({workers} processes)"
    with stage(label):
        seconds = side_by_side([Job("evaluation", name, _evaluate_model, (name,)) for name in todo], workers,
                               threads=config.threads, desc=label, unit="model", progress=config.progress,
                               initializer=_start_evaluation,
                               initargs=(config, list(context.specs.values()), list(controls), chash,
                                         context.reuse_from, context.data_root, list(datasets), list(benchmarks)))
    for done, stages in seconds:
        context.computed_elsewhere.update(done)
        context.worker_stages.merge(stages)


def _start_evaluation(config: RunConfig, specs: list[ModelSpec], controls: list[ModelSpec], chash: str,
                      reuse_from: tuple, data_root: Path, datasets: list[str], benchmarks: list[str]) -> None:
    """A worker's context: the run's catalog files registered, its data as the run prepared it, a feature store (no
    progress bars), its specs and plan, and one scope of world-content checks held for the worker's life."""
    from overspec.runner import register_user_catalogs, validated_settings
    from overspec.world.checks import checked_once

    checks = contextlib.ExitStack()
    checks.enter_context(checked_once())
    register_user_catalogs(config)
    settings = validated_settings(config)
    context = RunContext(config, data_root, feature_store(config, progress=False), reuse_from)
    context.specs = {spec.name: spec for spec in specs}
    _WORKER.update(context=context, settings=settings, chash=chash, checks=checks,
                   units=planned_run(config, settings, specs, datasets, benchmarks, controls))


def _evaluate_model(name: str) -> tuple[dict[str, float], list[dict[str, object]]]:
    """Compute and store the applicable units of model ``name`` in this worker; return their seconds by slug and
    the job's stage table."""
    context: RunContext = _WORKER["context"]
    result = RunResult(context.config.run_dir, [])
    with stage_clock() as clock:
        try:
            for planned in _WORKER["units"]:
                if planned.spec.name == name and not skip_reason(context, planned):
                    run_unit(context, planned, _WORKER["settings"], _WORKER["chash"], result)
        finally:
            context.unload()
    return result.unit_seconds, clock.table()
