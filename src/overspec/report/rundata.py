"""Read a finished run directory (records, provenance, per-sample predictions) for reporting, never recomputing.

A run directory is what :func:`overspec.runner.run_study` writes: ``results.jsonl``, ``provenance.json``,
``config.yaml`` and ``predictions/<model>__<dataset>__<protocol>.npz``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from overspec.results.records import Record, read_jsonl

logger = logging.getLogger(__name__)

__all__ = ["ModelInfo", "RunData", "load_run", "unit_slug"]


@dataclass(frozen=True)
class ModelInfo:
    """What provenance says about one model: its base (if it is a fine-tune), specialisation, the variant it is a
    preprocessing control of (the base fed that variant's preprocessing), and its size."""

    name: str
    base: str = ""
    specialisation: str = ""
    control_of: str = ""
    parameters: int | None = None
    size: int | None = None

    @property
    def is_variant(self) -> bool:
        """True when the model is a fine-tune of another model of the run."""
        return bool(self.base)


def unit_slug(model: str, dataset: str, protocol: str) -> str:
    """File stem of a unit's predictions (same rule as the runner's ``Unit.slug``)."""
    return "__".join(part.replace("/", "-") for part in (model, dataset, protocol))


@dataclass
class RunData:
    """Everything stored for one run: records in file order, provenance, the config text and the folder."""

    run_dir: Path
    records: list[Record]
    provenance: dict
    config_text: str = ""
    _predictions: dict = field(default_factory=dict, repr=False)

    @property
    def name(self) -> str:
        """The run name (from the records, else the folder name)."""
        return self.records[0].run if self.records else self.run_dir.name

    @cached_property
    def models(self) -> dict[str, ModelInfo]:
        """Model name -> :class:`ModelInfo`, in provenance order, plus models seen only in the records."""
        infos = {}
        for name, entry in (self.provenance.get("models") or {}).items():
            infos[name] = ModelInfo(name=name, base=entry.get("base") or "",
                                    specialisation=entry.get("specialisation") or "",
                                    control_of=entry.get("control_of") or "",
                                    parameters=entry.get("parameters"), size=entry.get("size"))
        for record in self.records:
            infos.setdefault(record.model, ModelInfo(name=record.model))
        return infos

    def main_metric(self, dataset: str) -> str:
        """The metric the catalog names as ``dataset``'s main one (top-1 when the run did not record it)."""
        return (self.provenance.get("main_metrics") or {}).get(dataset, "acc1")

    def model_names(self) -> list[str]:
        """Models in display order: each base followed by its fine-tunes, then the rest."""
        ordered: list[str] = []
        for name, info in self.models.items():
            if not info.is_variant and name not in ordered:
                ordered.append(name)
                ordered += [v.name for v in self.models.values() if v.base == name]
        return ordered + [n for n in self.models if n not in ordered]

    def variants(self) -> list[ModelInfo]:
        """Fine-tunes whose base is also a model of this run."""
        return [info for info in self.models.values() if info.is_variant and info.base in self.models]

    def predictions(self, model: str, dataset: str, protocol: str) -> dict[str, np.ndarray] | None:
        """Per-sample arrays of one unit (``label``, ``pred``, ``correct``, ``correct5``), or None if not stored."""
        key = (model, dataset, protocol)
        if key not in self._predictions:
            path = self.run_dir / "predictions" / f"{unit_slug(model, dataset, protocol)}.npz"
            if path.is_file():
                with np.load(path, allow_pickle=False) as data:
                    self._predictions[key] = {k: np.asarray(data[k]) for k in data.files}
            else:
                self._predictions[key] = None
        return self._predictions[key]


def load_run(run_dir: Path | str) -> RunData:
    """Read a run directory; raises FileNotFoundError naming the missing file."""
    run_dir = Path(run_dir)
    results = run_dir / "results.jsonl"
    if not results.is_file():
        raise FileNotFoundError(f"{results}: no results.jsonl; is {run_dir} a run directory written by 'overspec run'?")
    try:
        records = read_jsonl(results)
    except (json.JSONDecodeError, TypeError) as exc:
        raise ValueError(f"{results}: not a results file of overspec records ({exc})") from exc
    provenance_path = run_dir / "provenance.json"
    provenance = json.loads(provenance_path.read_text()) if provenance_path.is_file() else {}
    if not provenance:
        logger.warning("%s missing: model bases and specialisations are unknown", provenance_path)
    config_path = run_dir / "config.yaml"
    config_text = config_path.read_text() if config_path.is_file() else ""
    return RunData(run_dir=run_dir, records=records, provenance=provenance, config_text=config_text)
