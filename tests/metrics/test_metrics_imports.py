"""overspec.metrics imports with numpy and scipy alone: the peer benchmark environment (``make bench-peers``)
installs overspec without its model stack, beside bob.measure's numpy 1.26."""

import os
import subprocess
import sys
from pathlib import Path

import overspec

HEAVY = ("torch", "torchvision", "open_clip", "sklearn", "matplotlib", "transformers", "PIL", "yaml")


def test_metrics_import_without_the_model_stack():
    code = (
        "import sys, overspec.metrics\n"
        f"print(','.join(name for name in {HEAVY!r} if name in sys.modules))\n"
    )
    source = str(Path(overspec.__file__).resolve().parents[1])
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([source, os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=environment, check=True)
    assert result.stdout.strip() == "", f"import overspec.metrics also imported: {result.stdout.strip()}"
