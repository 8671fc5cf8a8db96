"""What each model of a run cost: parameters trained, training time and evaluation time.

Fine-tunes made by ``overspec finetune`` leave ``finetune.json`` beside their adapter (training seconds, device,
steps, trainable parameter counts); evaluation time is the compute time of the model's units, kept in each unit
file so a second run that reuses the units still reports what they cost when they were computed.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

from overspec.config.model import ModelSpec

logger = logging.getLogger(__name__)

__all__ = ["ModelCost", "model_costs", "safetensors_parameter_count", "training_record"]

TRAINING_RECORD = "finetune.json"


@dataclass(frozen=True)
class ModelCost:
    """One model's cost. ``trainable_parameters`` counts what its fine-tune trained (adapter plus training head);
    None for a model that was not trained here (a base, a weight-space combination) or whose record is missing."""

    model: str
    kind: str
    image_parameters: int | None = None
    trainable_parameters: int | None = None
    trainable_source: str = ""
    train_seconds: float | None = None
    train_device: str = ""
    train_steps: int | None = None
    eval_seconds: float = 0.0
    eval_units: int = 0

    def to_dict(self) -> dict:
        """Plain-data form (``provenance.json`` → ``costs``)."""
        return asdict(self)


def safetensors_parameter_count(path: Path) -> int:
    """Number of scalar values stored in a ``.safetensors`` file, read from its header (tensors are not loaded)."""
    with open(path, "rb") as handle:
        size = int.from_bytes(handle.read(8), "little")
        header = json.loads(handle.read(size))
    total = 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        count = 1
        for dim in entry["shape"]:
            count *= int(dim)
        total += count
    return total


def training_record(spec: ModelSpec) -> dict | None:
    """The ``finetune.json`` written beside ``spec``'s adapter, or None (no adapter, no record, unreadable)."""
    if not spec.adapter:
        return None
    path = Path(spec.adapter).parent / TRAINING_RECORD
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        logger.warning("%s: unreadable training record (%s); the cost table leaves its training columns empty",
                       path, exc)
        return None
    return record if isinstance(record, dict) else None


def _trainable(spec: ModelSpec, record: dict | None) -> tuple[int | None, str]:
    """Trainable parameter count and where it came from: the training record, else the adapter file's header."""
    counts = (record or {}).get("trainable_parameters")
    if isinstance(counts, dict) and counts:
        return int(sum(int(v) for v in counts.values())), "+".join(sorted(counts))
    if spec.adapter and Path(spec.adapter).is_file():
        return safetensors_parameter_count(Path(spec.adapter)), "adapter file"
    return None, ""


def _kind(spec: ModelSpec) -> str:
    if spec.options.get("control_of"):
        return "preprocessing control"
    if spec.combine:
        return "combination"
    if spec.base:
        return "fine-tune"
    return "base"


def model_cost(spec: ModelSpec, image_parameters: int | None, unit_seconds: list[float]) -> ModelCost:
    """The cost of one model from its spec, its image-tower size and the seconds of its units."""
    kind = _kind(spec)
    record = training_record(spec) if kind == "fine-tune" else None
    trainable, source = _trainable(spec, record) if kind == "fine-tune" else (None, "")
    seconds = (record or {}).get("train_seconds")
    steps = (record or {}).get("steps")
    return ModelCost(model=spec.name, kind=kind, image_parameters=image_parameters,
                     trainable_parameters=trainable, trainable_source=source,
                     train_seconds=round(float(seconds), 3) if seconds is not None else None,
                     train_device=str((record or {}).get("device") or ""),
                     train_steps=int(steps) if steps is not None else None,
                     eval_seconds=round(sum(unit_seconds), 3), eval_units=len(unit_seconds))


def model_costs(specs: list[ModelSpec], image_parameters: dict[str, int | None],
                unit_seconds: dict[str, tuple[str, float]]) -> dict[str, dict]:
    """``model -> cost`` for every spec; ``unit_seconds`` maps a unit slug to (its model, its compute seconds)."""
    by_model: dict[str, list[float]] = {}
    for model, seconds in unit_seconds.values():
        by_model.setdefault(model, []).append(seconds)
    return {s.name: model_cost(s, image_parameters.get(s.name), by_model.get(s.name, [])).to_dict() for s in specs}
