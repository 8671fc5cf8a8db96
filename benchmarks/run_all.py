"""Run every benchmark in turn and end with one table of every goal line they printed (``make bench``).

Each script prints lines ``goal: <row>: <measured> <op> <goal> ...: met|NOT met``. A script whose first lines
contain ``# bench: peers`` runs with the peer environment's interpreter (``--peers-python``, made by
``make bench-peers``), where the field's reference packages are importable beside overspec. A script that fails
or prints no goal line is listed as such; the exit status is 1 when any goal is missed or any script failed.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
GOAL_LINE = re.compile(r"^goal: (?P<row>.+?): (?P<measured>.+): (?P<verdict>met|NOT met)\s*$")


def needs_peers(script: Path) -> bool:
    """Return whether ``script`` declares ``# bench: peers`` in its first 20 lines."""
    with script.open() as handle:
        return any(line.strip() == "# bench: peers" for _, line in zip(range(20), handle))


def run_script(script: Path, python: str) -> tuple[int, list[re.Match], float]:
    """Run one benchmark, echoing its output; return (exit status, its goal lines, seconds)."""
    start = time.perf_counter()
    process = subprocess.Popen([python, str(script)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    goals = []
    for line in process.stdout:
        print(line, end="", flush=True)
        match = GOAL_LINE.match(line.strip())
        if match:
            goals.append(match)
    return process.wait(), goals, time.perf_counter() - start


def summary_table(results: list[tuple[str, int, list[re.Match], float]]) -> list[str]:
    """Return the final table: one row per goal line, plus one per script that failed or printed none."""
    lines = ["| benchmark | row | measured against goal | verdict |", "|---|---|---|---|"]
    for name, status, goals, _ in results:
        for goal in goals:
            lines.append(f"| {name} | {goal['row']} | {goal['measured']} | {goal['verdict']} |")
        if status != 0 and not goals:
            lines.append(f"| {name} | (no result) | exit status {status}: see its output above | NOT run |")
        elif not goals:
            lines.append(f"| {name} | (no goal line) | - | - |")
    return lines


def main() -> int:
    """Run the selected benchmarks and print the goal table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="benchmark names (bench_ prefix optional); default: all")
    parser.add_argument("--peers-python", default=str(HERE.parent / ".venv-peers" / "bin" / "python"),
                        help="interpreter for benchmarks that compare with peer packages")
    args = parser.parse_args()
    wanted = {name if name.startswith("bench_") else f"bench_{name}" for name in args.names}
    scripts = [s for s in sorted(HERE.glob("bench_*.py")) if not wanted or s.stem in wanted]
    results = []
    for script in scripts:
        python = args.peers_python if needs_peers(script) else sys.executable
        print(f"== {script.name} ({python})", flush=True)
        if not Path(python).exists():
            print(f"{python} does not exist: run `make bench-peers` first", flush=True)
            results.append((script.stem, 2, [], 0.0))
            continue
        results.append((script.stem, *run_script(script, python)))
    print("\n".join(["", *summary_table(results)]))
    print(f"benchmarks took {sum(r[3] for r in results) / 60:.1f} min")
    failed = any(status != 0 for _, status, _, _ in results)
    missed = any(goal["verdict"] != "met" for _, _, goals, _ in results for goal in goals)
    return 1 if failed or missed else 0


if __name__ == "__main__":
    sys.exit(main())
