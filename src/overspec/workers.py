"""Independent work side by side in spawned processes: fine-tunes of a run, or the models whose units it evaluates.

Each process runs torch at the run's thread count (so its numbers are those the run's own process would compute at
that count), writes log lines as the run does, tagged with its process id, and hands its errors back with their
class kept where the run's process can rebuild it. Jobs are handed out one at a time per process, so a slow job
never holds others queued behind it; the first error stops new jobs and is raised, named, once the running ones end.
"""

from __future__ import annotations

import copy
import logging
import multiprocessing
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass

from tqdm.auto import tqdm

from overspec.config.run import RunConfig
from overspec.progress import bar_disabled

__all__ = ["Job", "independent_workers", "name_error", "side_by_side", "start_worker"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Job:
    """One call for a worker: ``call(*args)`` (a module-level function), named ``"<what> of <label>"`` in its error
    and log lines."""

    what: str
    label: str
    call: Callable
    args: tuple = ()

    @property
    def name(self) -> str:
        """``<what> of <label>``, as errors and logs name the job."""
        return f"{self.what} of {self.label}"


def independent_workers(config: RunConfig, cpu_count: int | None = None) -> int:
    """How many processes may run independent jobs at ``config.threads`` torch threads each: as far as the cores go
    on CPU, 1 off CPU, under torchrun or without a fixed thread count (where the thread count is torch's choice)."""
    from overspec import distributed

    if config.device != "cpu" or config.threads < 1 or distributed.is_distributed():
        return 1
    return max(1, (cpu_count if cpu_count is not None else (os.cpu_count() or 1)) // config.threads)


def side_by_side(jobs: Sequence[Job], workers: int, *, threads: int, desc: str, unit: str, progress: bool,
                 initializer: Callable | None = None, initargs: tuple = ()) -> list:
    """Run ``jobs`` in ``workers`` spawned processes (each set up by :func:`start_worker`, then ``initializer``);
    return their results in job order. The first error (named by :func:`name_error`) stops new jobs and is raised
    once the running ones have ended; later ones are logged."""
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=start_worker,
                               initargs=(threads, *_log_settings(), initializer, initargs))
    pending, running, results, failures = list(enumerate(jobs)), {}, [None] * len(jobs), []
    try:
        with tqdm(total=len(jobs), desc=desc, unit=unit, disable=bar_disabled(progress)) as bar:
            while running or (pending and not failures):
                while pending and not failures and len(running) < workers:
                    index, job = pending.pop(0)
                    running[pool.submit(_timed, job.call, job.args)] = (index, job)
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    index, job = running.pop(future)
                    failures += _finished(future, job, results, index)
                    bar.update(1)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)  # reaps the workers, so their CPU time is booked here
    for later in failures[1:]:
        logger.error("%s", later)
    if failures:
        raise failures[0]
    return results


def name_error(exc: Exception, name: str) -> None:
    """Prefix ``exc``'s message with ``"<name>: "`` (a note when its message is not a plain string)."""
    prefix = f"{name}: "
    if len(exc.args) == 1 and isinstance(exc.args[0], str) and str(exc) == exc.args[0]:
        if not exc.args[0].startswith(prefix):
            exc.args = (prefix + exc.args[0],)
    else:
        exc.add_note(name)


def _finished(future: Future, job: Job, results: list, index: int) -> list[Exception]:
    """Keep a finished job's result and log its seconds; return its error (the job named in it), if any."""
    try:
        results[index], cpu, wall = future.result()
    except Exception as exc:  # a copy is named: a broken pool gives every job the same exception
        named = _copied(exc) or RuntimeError(str(exc))
        name_error(named, job.name)
        named.__cause__ = exc
        return [named]
    logger.info("%s done in %.1f s (%.1f CPU-s) in a worker", job.name, wall, cpu)
    return []


def _log_settings() -> tuple[int, int | None, str | None]:
    """The root logger's level and its first handler's level and format string, for the workers' own log lines
    (no handler here: none there either)."""
    root = logging.getLogger()
    if not root.handlers:
        return root.level, None, None
    formatter = root.handlers[0].formatter
    return root.level, root.handlers[0].level, formatter._fmt if formatter is not None else None


def start_worker(threads: int, root_level: int, handler_level: int | None, fmt: str | None,
                 initializer: Callable | None = None, initargs: tuple = ()) -> None:
    """A worker's set-up: the run's torch thread count, log lines as the run's own process writes them, each tagged
    with the worker's process id, then ``initializer(*initargs)``."""
    import torch

    torch.set_num_threads(threads)
    root = logging.getLogger()
    root.setLevel(root_level)
    if handler_level is not None:
        handler = logging.StreamHandler()
        handler.setLevel(handler_level)
        handler.setFormatter(logging.Formatter(f"[worker %(process)d] {fmt or '%(message)s'}"))
        root.addHandler(handler)
    if initializer is not None:
        initializer(*initargs)


def _timed(call: Callable, args: tuple) -> tuple[object, float, float]:
    """``call(*args)`` in a worker with its CPU and wall seconds; an error is made one the run's process can
    rebuild."""
    started, cpu_started = time.perf_counter(), time.process_time()
    try:
        result = call(*args)
    except Exception as exc:
        raise _portable(exc) from exc
    return result, time.process_time() - cpu_started, time.perf_counter() - started


def _copied(exc: Exception) -> Exception | None:
    """A copy of ``exc`` rebuilt from its arguments as pickling rebuilds it, or None when that fails."""
    try:
        return copy.copy(exc)
    except Exception:  # an __init__ that its own args do not satisfy
        return None


def _portable(exc: Exception) -> Exception:
    """``exc`` when the run's process can rebuild it, else its message in the nearest class that can carry it (an
    :class:`~overspec.errors.InputError` stays one), so a worker's error never breaks the pool."""
    if _copied(exc) is not None:
        return exc
    for kind in type(exc).__mro__[1:]:
        try:
            stand_in = kind(str(exc))
        except Exception:
            continue
        if isinstance(stand_in, Exception) and _copied(stand_in) is not None:
            return stand_in
    return RuntimeError(str(exc))
