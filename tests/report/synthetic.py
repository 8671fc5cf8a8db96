"""Synthetic run directories in the runner's format (results.jsonl, provenance.json, config.yaml, predictions)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import yaml

from overspec.report.rundata import unit_slug
from overspec.results.records import Record, write_jsonl

N_CLASSES = 10


def correlated_correct(accuracies: Sequence[float], n: int, rng: np.random.Generator) -> np.ndarray:
    """(M, n) 0/1 outcomes: model m is right on its round(acc·n) easiest images (shared difficulty → correlated)."""
    order = np.argsort(rng.random(n))
    out = np.zeros((len(accuracies), n), dtype=bool)
    for m, acc in enumerate(accuracies):
        out[m, order[:int(round(acc * n))]] = True
    return out


def make_run(root: Path, name: str, models: Mapping[str, dict], accuracy: Mapping[str, Mapping[str, float]], *,
             n: int = 500, seed: int = 0, protocols: Sequence[str] = ("zero_shot",), predictions: bool = True,
             overrides: Mapping[tuple[str, str, str], np.ndarray] | None = None, extra_records: Sequence[Record] = (),
             versions: Mapping[str, str] | None = None, config: Mapping | None = None) -> Path:
    """Write ``root/name``: ``models`` = {name: provenance entry}, ``accuracy`` = {model: {dataset: acc}}.

    Every protocol gets the same accuracies (linear probe = zero-shot + 0.1, capped at 1, so they differ).
    ``overrides`` replaces the 0/1 outcomes of a (model, dataset, protocol).
    """
    run_dir = root / name
    rng = np.random.default_rng(seed)
    names = list(accuracy)
    datasets = list(dict.fromkeys(d for acc in accuracy.values() for d in acc))
    records: list[Record] = []
    for protocol in protocols:
        shift = 0.0 if protocol == "zero_shot" else 0.1
        for dataset in datasets:
            labels = rng.integers(0, N_CLASSES, size=n)
            present = [m for m in names if dataset in accuracy[m]]
            outcomes = correlated_correct([min(1.0, accuracy[m][dataset] + shift) for m in present], n, rng)
            for model, correct in zip(present, outcomes):
                correct = np.asarray((overrides or {}).get((model, dataset, protocol), correct), dtype=bool)
                pred = np.where(correct, labels, (labels + 1) % N_CLASSES)
                if predictions:
                    path = run_dir / "predictions" / f"{unit_slug(model, dataset, protocol)}.npz"
                    path.parent.mkdir(parents=True, exist_ok=True)
                    np.savez(path, label=labels, pred=pred, correct=correct, correct5=correct | (labels % 2 == 0))
                for metric, value in (("acc1", correct.mean()), ("acc5", (correct | (labels % 2 == 0)).mean())):
                    records.append(Record(run=name, model=model, model_fingerprint=f"fp-{model}", dataset=dataset,
                                          split="test", protocol=protocol, metric=metric, value=float(value), n=n,
                                          config_hash="cafe", split_fingerprint=f"sfp-{dataset}"))
    records += list(extra_records)
    write_jsonl(run_dir / "results.jsonl", records)
    entries = {m: {"base": "", "specialisation": "", "source": "synthetic", "architecture": "", "weights": "",
                   "adapter": "", "head": "", "text": True, **models.get(m, {})} for m in dict.fromkeys([*models, *names])}
    provenance = {"config_hash": "cafe", "versions": dict(versions or {"numpy": "2.0", "torch": "2.4"}),
                  "environment": {"python": "3.11"}, "model_fingerprints": {m: f"fp-{m}" for m in entries},
                  "models": entries, "datasets": datasets}
    (run_dir / "provenance.json").write_text(json.dumps(provenance, indent=1))
    (run_dir / "config.yaml").write_text(yaml.safe_dump(dict(config or {"name": name, "seed": 0})))
    return run_dir


def study_like_accuracy(gelos: Mapping[str, float], base_acc: Sequence[float] = (0.8, 0.7, 0.6),
                        bases: Mapping[str, float] | None = None) -> dict[str, dict[str, float]]:
    """Per-dataset accuracies where each variant ``<base>-<spec>`` keeps ``gelos[variant]`` of its base on every set."""
    bases = dict(bases or {"small": 1.0, "large": 1.1})
    out: dict[str, dict[str, float]] = {}
    for base, scale in bases.items():
        out[base] = {f"ds{i}": min(1.0, a * scale) for i, a in enumerate(base_acc)}
    for variant, ratio in gelos.items():
        base = variant.split("-")[0]
        out[variant] = {d: a * ratio for d, a in out[base].items()}
    return out


def study_models(variants: Sequence[str], parameters: Mapping[str, int] | None = None) -> dict[str, dict]:
    """Provenance entries: bases ('small', 'large') with parameter counts, variants '<base>-<spec>'."""
    params = dict(parameters or {"small": 1_000_000, "large": 10_000_000})
    entries: dict[str, dict] = {b: {"parameters": p} for b, p in params.items()}
    for variant in variants:
        base, spec = variant.split("-")
        entries[variant] = {"base": base, "specialisation": spec}
    return entries
