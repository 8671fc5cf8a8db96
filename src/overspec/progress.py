"""Progress for the user: terminal-only progress bars, and a stage clock that says where a run's time went.

The stage clock measures CPU-seconds (this process's threads plus the child processes it has waited for, such as
the tiny-CLIP pretraining workers) beside wall seconds, because on a shared machine CPU time is what a stage
costs and wall time is what the machine's other load makes of it.
"""

from __future__ import annotations

import contextlib
import resource
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

__all__ = ["StageClock", "bar_disabled", "stage", "stage_clock"]


def bar_disabled(enabled: bool) -> bool | None:
    """tqdm's ``disable`` for a bar the user asked for (``enabled``): None lets tqdm hide it when its stream is not
    a terminal; True hides it always."""
    return None if enabled else True


def _cpu_seconds() -> float:
    """User + system CPU time of this process and of its children that have been waited for."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


@dataclass
class StageClock:
    """CPU and wall seconds per named stage, each exclusive of the stages timed inside it."""

    cpu: dict[str, float] = field(default_factory=dict)
    wall: dict[str, float] = field(default_factory=dict)
    count: dict[str, int] = field(default_factory=dict)
    _open: list[list] = field(default_factory=list)  # running stages: [name, cpu at start, wall at start, inner
    # cpu, inner wall]

    def add(self, name: str, cpu: float, wall: float) -> None:
        """Book ``cpu`` / ``wall`` seconds (already exclusive) to stage ``name``."""
        self.cpu[name] = self.cpu.get(name, 0.0) + cpu
        self.wall[name] = self.wall.get(name, 0.0) + wall
        self.count[name] = self.count.get(name, 0) + 1

    def merge(self, rows: list[dict[str, object]]) -> None:
        """Add the rows of another clock's :meth:`table` (a worker process's) to this one's."""
        for row in rows:
            name = str(row["stage"])
            self.add(name, float(row["cpu_s"]), float(row["wall_s"]))
            self.count[name] += int(row["count"]) - 1

    def table(self) -> list[dict[str, object]]:
        """Stages by CPU-seconds, largest first: ``{"stage", "cpu_s", "wall_s", "count"}`` rounded to 0.1 s;
        stages still running count with their seconds so far."""
        now = StageClock(dict(self.cpu), dict(self.wall), dict(self.count))
        cpu_now, wall_now = _cpu_seconds(), time.perf_counter()
        for name, cpu, wall, inner_cpu, inner_wall in self._open:
            now.add(name, cpu_now - cpu - inner_cpu, wall_now - wall - inner_wall)
        return [{"stage": name, "cpu_s": round(now.cpu[name], 1), "wall_s": round(now.wall[name], 1),
                 "count": now.count[name]} for name in sorted(now.cpu, key=lambda n: (-now.cpu[n], n))]

    def text(self) -> str:
        """The table as aligned text lines, with the total, for a log or a terminal."""
        rows = self.table()
        width = max([len("stage"), *(len(str(r["stage"])) for r in rows)])
        lines = [f"{'stage':<{width}}  {'CPU s':>8}  {'wall s':>8}  {'times':>5}"]
        lines += [f"{r['stage']:<{width}}  {r['cpu_s']:>8.1f}  {r['wall_s']:>8.1f}  {r['count']:>5}" for r in rows]
        total_cpu, total_wall = sum(r["cpu_s"] for r in rows), sum(r["wall_s"] for r in rows)
        lines.append(f"{'total':<{width}}  {total_cpu:>8.1f}  {total_wall:>8.1f}")
        return "\n".join(lines)


_ACTIVE: list[StageClock] = []


@contextlib.contextmanager
def stage_clock() -> Iterator[StageClock]:
    """Collect the :func:`stage` timings of the enclosed code into a fresh :class:`StageClock`; time outside any
    named stage goes to ``"other"``."""
    clock = StageClock()
    _ACTIVE.append(clock)
    try:
        with stage("other"):
            yield clock
    finally:
        _ACTIVE.remove(clock)


@contextlib.contextmanager
def stage(name: str) -> Iterator[None]:
    """Time the enclosed code as stage ``name`` of the active :func:`stage_clock` (nothing happens without one).

    A stage's seconds exclude those of stages opened inside it, so the table's rows add up to the whole.
    """
    if not _ACTIVE:
        yield
        return
    clock = _ACTIVE[-1]
    frame = [name, _cpu_seconds(), time.perf_counter(), 0.0, 0.0]
    clock._open.append(frame)
    try:
        yield
    finally:
        clock._open.pop()
        cpu, wall = _cpu_seconds() - frame[1], time.perf_counter() - frame[2]
        clock.add(name, cpu - frame[3], wall - frame[4])
        if clock._open:
            clock._open[-1][3] += cpu
            clock._open[-1][4] += wall
