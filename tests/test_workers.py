"""Jobs side by side in spawned processes: thread count, log format, results in order, named errors."""

from __future__ import annotations

import logging
import os

import pytest
import torch

from overspec import workers
from overspec.config.run import RunConfig
from overspec.errors import InputError


def test_a_workers_log_lines_take_the_runs_format_tagged_with_the_worker(capsys):
    root, threads = logging.getLogger(), torch.get_num_threads()
    before_level, before_handlers = root.level, list(root.handlers)
    seen = []
    try:
        workers.start_worker(1, logging.INFO, logging.INFO, "%(levelname)s %(name)s: %(message)s", seen.append,
                             ("set up",))
        logging.getLogger("overspec.x").info("hello")
        logging.getLogger("overspec.x").debug("not shown")
        assert torch.get_num_threads() == 1
    finally:
        for handler in set(root.handlers) - set(before_handlers):
            root.removeHandler(handler)
        root.setLevel(before_level)
        torch.set_num_threads(threads)
    assert f"[worker {os.getpid()}] INFO overspec.x: hello\n" in capsys.readouterr().err
    assert seen == ["set up"]  # the job kind's own set-up runs after the common one


@pytest.mark.parametrize(("device", "threads", "cores", "expected"), [
    ("cpu", 1, 2, 2), ("cpu", 1, 8, 8), ("cpu", 2, 2, 1), ("cpu", 2, 8, 4), ("cpu", 0, 8, 1), ("cuda", 1, 8, 1)])
def test_independent_jobs_take_the_cores_at_the_run_thread_count(device, threads, cores, expected):
    config = RunConfig(device=device, threads=threads)
    assert workers.independent_workers(config, cpu_count=cores) == expected


def test_under_torchrun_each_rank_works_alone(monkeypatch):
    from overspec import distributed

    monkeypatch.setattr(distributed, "is_distributed", lambda: True)
    assert workers.independent_workers(RunConfig(threads=1), cpu_count=8) == 1


def _square(x: int) -> int:
    return x * x


def _fails(x: int) -> int:
    raise InputError(f"bad input {x}")


def test_results_come_back_in_job_order_from_two_processes():
    jobs = [workers.Job("square", str(x), _square, (x,)) for x in range(5)]
    assert workers.side_by_side(jobs, 2, threads=1, desc="t", unit="job", progress=False) == [0, 1, 4, 9, 16]


def test_a_failing_job_is_named_and_keeps_its_class(caplog):
    jobs = [workers.Job("square", "one", _square, (1,)), workers.Job("check", "two", _fails, (2,))]
    with caplog.at_level(logging.INFO, logger=workers.__name__), \
            pytest.raises(InputError, match="^check of two: bad input 2$"):
        workers.side_by_side(jobs, 2, threads=1, desc="t", unit="job", progress=False)
    assert "square of one done in" in caplog.text


@pytest.mark.parametrize("message", [("plain",), ("a", "b")])
def test_name_error_prefixes_a_plain_message_or_adds_a_note(message):
    exc = ValueError(*message)
    workers.name_error(exc, "job of x")
    if len(message) == 1:
        assert str(exc) == "job of x: plain"
        workers.name_error(exc, "job of x")
        assert str(exc) == "job of x: plain"  # never twice
    else:
        assert exc.__notes__ == ["job of x"]
