"""What a run's numbers depend on: package versions, the resolved config and its hash, fingerprints, timings."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import platform
import sys

__all__ = ["package_versions", "config_hash", "environment"]

_PACKAGES = ("overspec", "torch", "torchvision", "open_clip_torch", "numpy", "scipy", "scikit-learn", "pillow",
             "safetensors", "transformers", "timm")


def package_versions() -> dict[str, str]:
    """Return the installed versions of the packages that influence results (``"absent"`` when missing)."""
    versions = {}
    for name in _PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions


def config_hash(resolved: dict) -> str:
    """Return a short sha256 of the resolved config (sorted JSON), the key that ties results to settings."""
    text = json.dumps(resolved, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def environment() -> dict[str, str]:
    """Return interpreter and platform facts worth keeping with a run."""
    import torch

    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch_threads": str(torch.get_num_threads()),
        "cuda": torch.version.cuda or "none",
        "deterministic_algorithms": str(torch.are_deterministic_algorithms_enabled()),
    }
