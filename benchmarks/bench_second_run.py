"""Second run of the same evaluation ÷ first run (goal ≤ 0.02), on the embedded-world default study.

The world, the tiny CLIPs and their fine-tunes are made once beforehand in the shared cache (they are not part of
"the evaluation"); the first timed run then starts with empty feature and result caches, the second reuses
everything. Each timed run is a fresh process, as when a user types ``overspec run`` twice, so nothing the first
run left in memory helps the second; each side times ``run_study`` alone (interpreter start and imports, the same
for both, are left out).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from overspec.config.run import default_cache_dir, default_config
from overspec.runner import run_study


def _timed_run(cache: Path, runs: Path) -> dict:
    """Run the default study on ``cache`` in this process; return its seconds and unit counts."""
    config = default_config(cache_dir=str(cache), output_dir=str(runs), progress=False)
    start = time.perf_counter()
    result = run_study(config)
    return {"seconds": time.perf_counter() - start, "computed": len(result.computed), "reused": len(result.reused)}


def _in_fresh_process(cache: Path, runs: Path) -> dict:
    """Run :func:`_timed_run` in a new interpreter and return what it reports."""
    command = [sys.executable, __file__, "--timed-run", str(cache), str(runs)]
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timed-run", nargs=2, metavar=("CACHE", "RUNS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.timed_run:
        print(json.dumps(_timed_run(Path(args.timed_run[0]), Path(args.timed_run[1]))))
        return
    shared = default_cache_dir()
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "cache"
        cache.mkdir()
        warm = default_config(cache_dir=str(shared), output_dir=str(Path(tmp) / "prep"), progress=False)
        run_study(warm)  # ensures the world and tiny models exist in the shared cache
        for name in ("world-data", "world-models", "finetune"):
            os.symlink(shared / name, cache / name)
        first = _in_fresh_process(cache, Path(tmp) / "runs")
        second = _in_fresh_process(cache, Path(tmp) / "runs")
    print(f"first_run_s={first['seconds']:.2f} (units computed {first['computed']}) "
          f"second_run_s={second['seconds']:.3f} (units reused {second['reused']}) "
          f"ratio={second['seconds'] / first['seconds']:.4f} (goal <= 0.02)")


if __name__ == "__main__":
    main()
