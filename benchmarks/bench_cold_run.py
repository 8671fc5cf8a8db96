"""Cold first run of the default study (``overspec run``, as ``make run`` starts it) in wall and CPU seconds.

Goals (issue 14): at most 10 minutes of wall time on 2 idle cores, and at most 1,100 CPU-seconds (the wall goal
with both cores busy while the two tiny CLIPs pretrain side by side and one core busy for the rest). The run is one
fresh ``overspec run`` process on an empty cache and output folder, exactly as a fresh clone's first run; its CPU
time is that process's and its workers' (user + system). The machine's load average before and after is printed
because wall time on a shared machine says as much about the other load as about overspec; the CPU goal does not
depend on it. The stage table comes from the run's ``provenance.json``. There is no other program to compare
with: the goal is absolute.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WALL_GOAL_S = 600.0
CPU_GOAL_S = 1100.0


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3]) if Path("/proc/loadavg").is_file() else "?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=Path, help="run in this (empty) folder and keep it, instead of a temporary one")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "OVERSPEC_CACHE": str(folder / "cache")}
        command = [sys.executable, "-m", "overspec.cli.main", "run", "--no-progress", "--output-dir",
                   str(folder / "runs")]
        load_before, cpu_before, start = _load(), _children_cpu(), time.perf_counter()
        subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL)
        wall, cpu = time.perf_counter() - start, _children_cpu() - cpu_before
        provenance = json.loads((folder / "runs" / "default" / "provenance.json").read_text())
    print(f"load average (1, 5, 15 min) before: {load_before}; after: {_load()}; cores: {os.cpu_count()}")
    for row in provenance["timings"]["stages"]:
        print(f"  {row['stage']:<48} {row['cpu_s']:>8.1f} CPU s {row['wall_s']:>8.1f} wall s  x{row['count']}")
    print(f"cold_run_wall_s={wall:.1f} cold_run_cpu_s={cpu:.1f}")
    print(f"goal: cold first run, wall seconds: {wall:.0f} <= {WALL_GOAL_S:.0f} (2 idle cores): "
          f"{'met' if wall <= WALL_GOAL_S else 'NOT met'}")
    verdict = "met" if cpu <= CPU_GOAL_S else "NOT met"
    print(f"goal: cold first run, CPU seconds: {cpu:.0f} <= {CPU_GOAL_S:.0f}: {verdict}")


if __name__ == "__main__":
    main()
