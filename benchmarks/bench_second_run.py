"""Second run of the same evaluation ÷ first run, both as the user runs ``overspec run`` (goal ≤ 0.03).

Both sides are the user's command, ``python -m overspec.cli.main run --cache-dir C --output-dir R``, in a fresh
interpreter, timed by the wall clock from launch to exit: interpreter start, imports, the study, the report and the
printed summary all count. The world, the tiny CLIPs and their fine-tunes are made beforehand in the shared cache and
copied into a new empty cache (they are not part of "the evaluation"); the first run then starts with empty feature,
model-fact and result caches and computes every unit, the second is the same command again and reuses everything.
A third, instrumented run of the same command (``-X importtime``) shows where the second run's time goes.
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from overspec.config.run import default_cache_dir, default_config
from overspec.runner import run_study

GOAL = 0.03
PREMADE = ("world-data", "world-models", "finetune")
_SUMMARY = re.compile(r"(\d+) records, (\d+) units computed, (\d+) reused, \d+ not applicable, ([\d.]+) s")


def _command(cache: Path, runs: Path, *python_flags: str) -> list[str]:
    """The user's ``overspec run`` of the default study on ``cache``, writing under ``runs``."""
    return [sys.executable, *python_flags, "-m", "overspec.cli.main", "run", "--cache-dir", str(cache),
            "--output-dir", str(runs), "--no-progress"]


def _timed(command: list[str]) -> tuple[float, subprocess.CompletedProcess]:
    """Wall seconds from launching ``command`` to its exit, and what it printed."""
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return time.perf_counter() - start, done


def _counts(stdout: str) -> tuple[int, int, float]:
    """Units computed and reused, and the study's own seconds, from the command's last line."""
    match = _SUMMARY.search(stdout)
    if match is None:
        raise RuntimeError(f"no run summary in the command's output:\n{stdout[-2000:]}")
    return int(match.group(2)), int(match.group(3)), float(match.group(4))


def _import_seconds(importtime: str) -> float:
    """Seconds spent in top-level imports, from ``-X importtime`` output (nested imports count in their parent)."""
    total = 0
    for line in importtime.splitlines():
        parts = line.split("|")
        if line.startswith("import time:") and len(parts) == 3 and not parts[2].startswith("  "):
            total += int(parts[1]) if parts[1].strip().isdigit() else 0
    return total / 1e6


def _heavy_loaded(importtime: str) -> list[str]:
    """The heavy packages the run imported."""
    names = {line.split("|")[2].strip() for line in importtime.splitlines() if line.count("|") == 2}
    return [p for p in ("torch", "torchvision", "sklearn", "scipy", "matplotlib") if p in names]


def _prepared_cache(shared: Path, root: Path) -> Path:
    """A new cache under ``root`` holding copies of the shared cache's pre-made world, tiny CLIPs and fine-tunes
    (copies: a dataset's files must lie inside its data root, which a link would leave)."""
    run_study(default_config(cache_dir=str(shared), output_dir=str(root / "prep"), progress=False))
    cache = root / "cache"
    cache.mkdir()
    for name in PREMADE:
        shutil.copytree(shared / name, cache / name)
    return cache


def _round(shared: Path) -> dict:
    """One first run and one second run on a new empty cache, then the instrumented third run."""
    with tempfile.TemporaryDirectory() as tmp:
        cache, runs = _prepared_cache(shared, Path(tmp)), Path(tmp) / "runs"
        first, first_out = _timed(_command(cache, runs))
        second, second_out = _timed(_command(cache, runs))
        _, instrumented = _timed(_command(cache, runs, "-X", "importtime"))
    computed, _, _ = _counts(first_out.stdout)
    study = _counts(instrumented.stdout)[2]
    return {"first": first, "second": second, "computed": computed, "reused": _counts(second_out.stdout)[1],
            "imports": _import_seconds(instrumented.stderr), "study": study,
            "heavy": _heavy_loaded(instrumented.stderr)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=1, help="first/second pairs, each on a new cache (median)")
    parser.add_argument("--shared-cache", type=Path, default=None,
                        help="cache holding (or to receive) the pre-made world, tiny CLIPs and fine-tunes "
                             "(default: $OVERSPEC_CACHE or ~/.cache/overspec)")
    args = parser.parse_args()
    shared = args.shared_cache or default_cache_dir()
    rounds = [_round(shared) for _ in range(args.rounds)]
    first = statistics.median(r["first"] for r in rounds)
    second = statistics.median(r["second"] for r in rounds)
    last = rounds[-1]
    ratio = second / first
    print(f"first run (empty feature, model-fact and result caches; world, tiny CLIPs, fine-tunes pre-made): "
          f"{first:.2f} s wall, {last['computed']} units computed")
    print(f"second run (the same command again): {second:.2f} s wall, {last['reused']} units reused")
    print(f"ratio = {ratio:.4f} (median of {len(rounds)} round(s); interpreter start and imports included)")
    print(f"second run's time, from an instrumented third run (-X importtime): imports {last['imports']:.2f} s "
          f"(heavy packages loaded: {', '.join(last['heavy']) or 'none'}), run_study {last['study']:.2f} s, "
          f"the rest (interpreter start, report check, outputs, printing) "
          f"{max(second - last['imports'] - last['study'], 0.0):.2f} s")
    print(f"goal: second run / first run (as the user runs it): {ratio:.4f} <= {GOAL}: "
          f"{'met' if ratio <= GOAL else 'NOT met'}")


if __name__ == "__main__":
    main()
