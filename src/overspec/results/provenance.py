"""What a run's numbers depend on: package versions, the resolved config and its hash, fingerprints, timings."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import platform
import sys
from collections.abc import Mapping, Sequence

from overspec.config.model import ModelSpec
from overspec.results.costs import model_costs
from overspec.results.records import Record

__all__ = ["package_versions", "config_hash", "environment", "run_provenance"]

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


def _model_entry(spec: ModelSpec, parameters: int | None) -> dict:
    return {"base": spec.base, "specialisation": spec.specialisation, "source": spec.source,
            "control_of": spec.options.get("control_of", ""), "architecture": spec.architecture,
            "weights": spec.weights, "adapter": spec.adapter, "head": spec.head, "text": spec.text,
            "parameters": parameters}


def run_provenance(*, chash: str, records: Sequence[Record], specs: Sequence[ModelSpec],
                   image_parameters: Mapping[str, int | None], datasets: Sequence[str], main_metrics: Mapping[str, str],
                   units: Mapping[str, object], timings: Mapping[str, object],
                   unit_costs: Mapping[str, tuple[str, float]]) -> dict:
    """``provenance.json`` of a run: versions, environment, fingerprints, models, units, timings and costs."""
    return {"config_hash": chash, "versions": package_versions(), "environment": environment(),
            "model_fingerprints": {r.model: r.model_fingerprint for r in records},
            "models": {s.name: _model_entry(s, image_parameters.get(s.name)) for s in specs},
            "datasets": list(datasets), "main_metrics": dict(main_metrics),
            "split_fingerprints": sorted({f"{r.dataset}/{r.split}={r.split_fingerprint}" for r in records}),
            "units": dict(units), "timings": dict(timings),
            "costs": model_costs(list(specs), dict(image_parameters), dict(unit_costs))}
