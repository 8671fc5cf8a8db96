"""The run's fine-tunes: every recipe on every base model, made (side by side when the machine allows) or reused.

A run with fine-tune recipes makes, before any evaluation, one fine-tune per (base model, recipe) into a cache folder
keyed by its recipe config, base spec and training data (:func:`finetune_folder`). The fine-tunes still to train run
in spawned processes, one per base model with ``threads`` torch threads each, when the run is on CPU with a fixed
thread count and the machine has the cores; a fine-tune is deterministic for its seed at a fixed thread count, so
its tensors are those of the same fine-tune trained in the run's own process. Each job's folder is locked and
written atomically by :func:`~overspec.finetune.run.finetune`, whichever process runs it.

Produced base weights (``world:tiny-s``) are made first in this process, so the workers never start a base's own
(parallel) pretraining; :func:`prepare_world` generates the run's world beside that pretraining, in a process of its
own, when the world is missing and every model of the run is a produced one (the embedded study). Workers show no
progress bars: one bar counts finished fine-tunes, and each finished one is logged with its seconds. A worker's
error is raised here with the base and recipe named.

Spawned processes start from the code's own settings, as the pretraining workers do: a test that patches module
state (world sizes, recipes) keeps ``threads: 0`` (or one core), so that everything runs in its own process.
"""

from __future__ import annotations

import contextlib
import json
import logging
import multiprocessing
import os
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from overspec.config.model import ModelSpec
from overspec.config.run import RunConfig
from overspec.config.typed import ConfigError, from_dict, load_yaml
from overspec.errors import InputError
from overspec.files import combine
from overspec.finetune.recipes import FinetuneConfig, load_recipe
from overspec.progress import stage
from overspec.workers import Job, name_error, side_by_side

__all__ = ["FinetuneJob", "finetune_folder", "finetune_jobs", "made_jobs", "parallel_workers",
           "prepare_world", "recipe_config", "with_finetuned_variants"]

logger = logging.getLogger(__name__)

#: Stage of the run's stage clock that the fine-tunes trained side by side are booked to (wall: the parallel
#: section; CPU: every worker's, booked when the pool's processes are reaped at its end).
PARALLEL_STAGE = "fine-tune (parallel)"
WORLD_STAGE = "world: generate data"
WORLD_NICENESS = 10  # the world's process yields to pretraining, taking the core that pretraining leaves idle


@dataclass(frozen=True)
class FinetuneJob:
    """One fine-tune of a run: a recipe's config on a base, its training data and its cache folder.

    ``data`` is a path, or ``"world"`` for the biometric world the run evaluates on (prepared under ``world_root``).
    """

    base: ModelSpec
    recipe: str
    config: FinetuneConfig
    data: str
    world_root: Path | None
    folder: Path

    @property
    def label(self) -> str:
        """``<base> with <recipe>``, as errors and logs name the job."""
        return f"{self.base.name} with {self.recipe}"


def recipe_config(config: RunConfig, recipe: str) -> FinetuneConfig:
    """The fine-tune config of ``recipe`` under the run's profile and overrides (a bad one names the recipe)."""
    try:
        return load_recipe(recipe, profile=config.finetune.profile or None, overrides=config.finetune.overrides)
    except (ValueError, FileNotFoundError, KeyError) as exc:
        raise ConfigError(f"finetune: recipe {recipe!r} (profile {config.finetune.profile or 'default'!r}, "
                          f"overrides {list(config.finetune.overrides)}): {exc}") from None


def finetune_folder(config: RunConfig, spec: ModelSpec, recipe: str, recipe_config: FinetuneConfig) -> Path:
    """Cache folder of one fine-tune, keyed by the recipe's config, the base's spec and the training data named (the
    world's seed for world data), so a changed recipe, base or data never meets another fine-tune's checkpoints."""
    from overspec.finetune.recipes import config_hash as recipe_hash

    profile = config.finetune.profile or "default"
    data = config.finetune.data.get(recipe, "world")
    key = combine(recipe_hash(recipe_config), json.dumps(asdict(spec), sort_keys=True, default=str), str(data),
                  f"seed {config.seed}" if data == "world" else "")
    return config.cache_path / "finetune" / spec.name / f"{recipe}-{profile}-{key[:12]}"


def prepare_world(config: RunConfig, root: Path) -> Path:
    """Generate the run's world under ``root`` unless complete (stage ``world: generate data``); return its data root.

    When the world is still to generate and the run's models are all produced ones (the embedded study, whose
    fine-tunes need the tiny CLIPs pretrained), the world is generated in a spawned process at lower priority
    while this one produces the models, so the generation takes the core pretraining leaves idle. Its CPU time is
    booked to this stage when the process is reaped; its wall time, to the models' own stages, except the wait
    for the world once they are made.
    """
    from overspec.world import prepare

    with stage(WORLD_STAGE):
        bases = _bases_to_make_beside_the_world(config, root)
        if not bases:
            return prepare(root, config.seed)
        logger.info("generating the world in a second process while the models are made")
        pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"), initializer=os.nice,
                                   initargs=(WORLD_NICENESS,))
        try:
            world = pool.submit(prepare, root, config.seed)
            _produce_base_weights(bases, config.cache_path)
            return world.result()
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


def _bases_to_make_beside_the_world(config: RunConfig, root: Path) -> list[ModelSpec]:
    """The run's models when the world is missing, fine-tunes will need every model's weights and they are all
    produced (``SCHEME:NAME``) ones, on CPU with a core to spare; else none (the world is made first, as the run
    checks the other models' files before anything long)."""
    from overspec.models import resolve_spec
    from overspec.models.sources.files import scheme_of
    from overspec.world.biometric import MARKER
    from overspec.world.layout import biometric_root, seed_root

    if not config.finetune.recipes or config.device != "cpu" or config.threads < 1 or (os.cpu_count() or 1) < 2:
        return []
    if (biometric_root(seed_root(root, config.seed)) / MARKER).is_file():
        return []
    specs = [resolve_spec(model) for model in config.models]
    return specs if specs and all(scheme_of(spec.weights or "") for spec in specs) else []


def finetune_jobs(config: RunConfig, specs: list[ModelSpec], data_root: Path) -> list[FinetuneJob]:
    """The run's fine-tunes in result order: for each base model (not a fine-tune or combination), every recipe."""
    jobs = []
    for spec in specs:
        if spec.base or spec.combine:
            continue
        for recipe in config.finetune.recipes:
            data = config.finetune.data.get(recipe, "world" if config.world else None)
            if data is None:
                raise InputError(f"finetune.data has no training data for recipe {recipe!r} (and world is off)")
            chosen = recipe_config(config, recipe)
            jobs.append(FinetuneJob(spec, recipe, chosen, str(data), data_root if config.world else None,
                                    finetune_folder(config, spec, recipe, chosen)))
    return jobs


def parallel_workers(config: RunConfig, jobs: list[FinetuneJob], cpu_count: int | None = None) -> int:
    """How many processes train ``jobs`` (the ones still to train): one per base model with fine-tunes to make,
    as far as the cores go at ``config.threads`` threads each; 1 (this process) off CPU or without a fixed thread
    count, where side-by-side training would change the thread count the weights were made with."""
    if config.device != "cpu" or config.threads < 1 or len(jobs) < 2:
        return 1
    cores = cpu_count if cpu_count is not None else (os.cpu_count() or 1)
    return max(1, min(len({job.base.name for job in jobs}), cores // config.threads))


def made_jobs(config: RunConfig, jobs: list[FinetuneJob], workers: int) -> dict[Path, Path]:
    """``folder -> model.yaml`` of every job: the ones still to train trained in ``workers`` processes (when more
    than one), then each verified (or trained) here."""
    todo = [job for job in jobs if not _looks_finished(job)]
    if workers > 1 and len(todo) > 1:
        _produce_base_weights([job.base for job in todo], config.cache_path)
        with stage(PARALLEL_STAGE):
            _train_side_by_side(config, _interleaved(todo), min(workers, len(todo)))
    return {job.folder: _made_or_reused(config, job) for job in jobs}


def with_finetuned_variants(config: RunConfig, specs: list[ModelSpec], data_root: Path) -> list[ModelSpec]:
    """Return ``specs`` with, after each base model, its fine-tunes by the configured recipes (made or reused)."""
    if not config.finetune.recipes:
        return specs
    jobs = finetune_jobs(config, specs, data_root)
    made = made_jobs(config, jobs, parallel_workers(config, [job for job in jobs if not _looks_finished(job)]))
    out = []
    for spec in specs:
        out.append(spec)
        out += [from_dict(ModelSpec, load_yaml(made[job.folder]), where=str(made[job.folder])) for job in jobs
                if job.base.name == spec.name]
    return out


def _looks_finished(job: FinetuneJob) -> bool:
    """Whether the job's folder holds a finished fine-tune's record (verified later, in this process)."""
    from overspec.finetune.run import RUN_FILE

    return (job.folder / RUN_FILE).is_file()


def _interleaved(jobs: list[FinetuneJob]) -> list[FinetuneJob]:
    """``jobs`` taken in turn from each base (its first recipe, then the next base's first...), so the bases'
    fine-tunes run side by side from the start."""
    by_base: dict[str, list[FinetuneJob]] = {}
    for job in jobs:
        by_base.setdefault(job.base.name, []).append(job)
    rounds = max(len(queue) for queue in by_base.values())
    return [queue[i] for i in range(rounds) for queue in by_base.values() if i < len(queue)]


def _produce_base_weights(bases: list[ModelSpec], cache_dir: Path) -> None:
    """Make the produced (``SCHEME:NAME``) weights of ``bases`` here, before the workers load them."""
    from overspec.models.sources.files import produced_folder, scheme_of

    for base in {spec.name: spec for spec in bases}.values():
        if scheme_of(base.weights or ""):
            produced_folder(base, cache_dir)


def _made_or_reused(config: RunConfig, job: FinetuneJob) -> Path:
    """The job's ``model.yaml``: trained in this process, or verified and reused (what a worker made included)."""
    with stage(f"fine-tune {job.base.name} {job.recipe}"), _naming(job):
        logger.info("fine-tuning %s (or reusing %s)", job.label, job.folder)
        return run_job(job, cache_dir=config.cache_path, device=config.device, progress=config.progress)


def run_job(job: FinetuneJob, *, cache_dir: Path, device: str, progress: bool) -> Path:
    """Fine-tune (or reuse) ``job`` in this process; return its ``model.yaml``."""
    from overspec.finetune.run import finetune, world_training_data

    data = job.data
    if data == "world" and job.world_root is not None:  # the biometric world the run evaluates on
        data = world_training_data(job.config.task, job.config, job.world_root)
    return finetune(job.config, job.base, data, job.folder, cache_dir=cache_dir, device=device, progress=progress)


@contextlib.contextmanager
def _naming(job: FinetuneJob) -> Iterator[None]:
    """Name ``job`` in any exception leaving the block (message prefixed, type kept)."""
    try:
        yield
    except Exception as exc:
        name_error(exc, f"fine-tune of {job.label}")
        raise


def _train_side_by_side(config: RunConfig, jobs: list[FinetuneJob], workers: int) -> None:
    """Train ``jobs`` in ``workers`` spawned processes (:func:`~overspec.workers.side_by_side`); the first error,
    named with the job's base and recipe, is raised once the running ones have ended."""
    logger.info("fine-tuning %d models in %d processes", len(jobs), workers)
    side_by_side([Job("fine-tune", job.label, _worker_job, (job, config.cache_path, config.device)) for job in jobs],
                 workers, threads=config.threads, desc=f"fine-tune ({workers} processes)", unit="model",
                 progress=config.progress)


def _worker_job(job: FinetuneJob, cache_dir: Path, device: str) -> None:
    """Run ``job`` in a worker (no progress bar; produced content hashed once per job)."""
    from overspec.world.checks import checked_once

    with checked_once():
        run_job(job, cache_dir=cache_dir, device=device, progress=False)
