"""Second run of the same evaluation ÷ first run (goal ≤ 0.02), on the embedded-world default study.

The world, the tiny CLIPs and their fine-tunes are made once beforehand in the shared cache (they are not part of
"the evaluation"); the first timed run then starts with empty feature and result caches, the second reuses
everything.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from overspec.config.run import default_cache_dir, default_config
from overspec.runner import run_study


def main() -> None:
    shared = default_cache_dir()
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "cache"
        cache.mkdir()
        warm = default_config(cache_dir=str(shared), output_dir=str(Path(tmp) / "prep"), progress=False)
        run_study(warm)  # ensures the world and tiny models exist in the shared cache
        for name in ("world-data", "world-models", "finetune"):
            os.symlink(shared / name, cache / name)
        config = default_config(cache_dir=str(cache), output_dir=str(Path(tmp) / "runs"), progress=False)
        start = time.perf_counter()
        first = run_study(config)
        first_s = time.perf_counter() - start
        start = time.perf_counter()
        second = run_study(config)
        second_s = time.perf_counter() - start
    print(f"first_run_s={first_s:.2f} (units computed {len(first.computed)}) second_run_s={second_s:.3f} "
          f"(units reused {len(second.reused)}) ratio={second_s / first_s:.4f} (goal <= 0.02)")


if __name__ == "__main__":
    main()
