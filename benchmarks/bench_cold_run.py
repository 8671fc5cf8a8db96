"""Cold first run of the default study (``overspec run``, as ``make run`` starts it) in wall and CPU seconds.

Goals (issue 14): at most 10 minutes of wall time on 2 idle cores, and at most 1,100 CPU-seconds (the wall goal
with both cores busy while the two tiny CLIPs pretrain side by side and one core busy for the rest). The run is one
fresh ``overspec run`` process on an empty cache and output folder, exactly as a fresh clone's first run; its CPU
time is that process's and its workers' (user + system). The machine's load average before and after is printed
because wall time on a shared machine says as much about the other load as about overspec; the CPU goal does not
depend on it. The stage table comes from the run's ``provenance.json``, and so does the table of where the
evaluation processes spent their time. There is no other program to compare with: the goal is absolute.

With ``--sweep`` the finished run is followed by ``overspec sweep`` at its defaults (λ = 0, 0.1, …, 1 for the six
fine-tunes, eight merged models, nine regularised fine-tunes) and by that sweep again. Goals (issue 15): the sweep
adds at most 10 minutes of wall time on 2 idle cores, and a second sweep takes seconds (at most 30).
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
SWEEP_WALL_GOAL_S = 600.0
SECOND_SWEEP_GOAL_S = 30.0


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3]) if Path("/proc/loadavg").is_file() else "?"


def _timed(command: str, folder: Path) -> tuple[float, float]:
    """Wall and CPU seconds of one ``overspec COMMAND`` on the folder's cache and output folder."""
    env = {**os.environ, "OVERSPEC_CACHE": str(folder / "cache")}
    cpu_before, start = _children_cpu(), time.perf_counter()
    subprocess.run([sys.executable, "-m", "overspec.cli.main", command, "--no-progress", "--output-dir",
                    str(folder / "runs")], check=True, env=env, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start, _children_cpu() - cpu_before


def _print_stages(title: str, provenance: dict) -> None:
    print(title)
    for key in ("stages", "worker_stages"):
        if key == "worker_stages" and key in provenance["timings"]:
            print("  in the evaluation processes:")
        for row in provenance["timings"].get(key, []):
            print(f"  {row['stage']:<48} {row['cpu_s']:>8.1f} CPU s {row['wall_s']:>8.1f} wall s  x{row['count']}")


def _verdict(met: bool) -> str:
    return "met" if met else "NOT met"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=Path, help="run in this (empty) folder and keep it, instead of a temporary one")
    parser.add_argument("--sweep", action="store_true", help="then time `overspec sweep`, cold and again")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        load_before = _load()
        wall, cpu = _timed("run", folder)
        provenance = json.loads((folder / "runs" / "default" / "provenance.json").read_text())
        if args.sweep:
            sweep_load = _load()
            sweep_wall, sweep_cpu = _timed("sweep", folder)
            sweep_provenance = json.loads((folder / "runs" / "default-sweep" / "provenance.json").read_text())
            again_wall, _ = _timed("sweep", folder)
    print(f"load average (1, 5, 15 min) before: {load_before}; after: {_load()}; cores: {os.cpu_count()}")
    _print_stages("cold run stages:", provenance)
    print(f"cold_run_wall_s={wall:.1f} cold_run_cpu_s={cpu:.1f}")
    print(f"goal: cold first run, wall seconds: {wall:.0f} <= {WALL_GOAL_S:.0f} (2 idle cores): "
          f"{_verdict(wall <= WALL_GOAL_S)}")
    print(f"goal: cold first run, CPU seconds: {cpu:.0f} <= {CPU_GOAL_S:.0f}: {_verdict(cpu <= CPU_GOAL_S)}")
    if args.sweep:
        _print_stages(f"sweep stages (load average before: {sweep_load}):", sweep_provenance)
        print(f"sweep_wall_s={sweep_wall:.1f} sweep_cpu_s={sweep_cpu:.1f} second_sweep_wall_s={again_wall:.1f}")
        print(f"goal: sweep after the finished run, wall seconds: {sweep_wall:.0f} <= {SWEEP_WALL_GOAL_S:.0f} "
              f"(2 idle cores): {_verdict(sweep_wall <= SWEEP_WALL_GOAL_S)}")
        print(f"goal: second sweep, wall seconds: {again_wall:.1f} <= {SECOND_SWEEP_GOAL_S:.0f}: "
              f"{_verdict(again_wall <= SECOND_SWEEP_GOAL_S)}")


if __name__ == "__main__":
    main()
