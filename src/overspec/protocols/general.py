"""General-vision units of a run: zero-shot and linear probe of one model on one dataset.

These functions are the only place where the runner's lazily loaded models and splits meet the protocols, which
themselves only see features and labels.
"""

from __future__ import annotations

import numpy as np
import torch

from overspec.protocols.linear_probe import kshot_probe, linear_probe
from overspec.protocols.zero_shot import evaluate_zero_shot, prompt_set_fingerprint

__all__ = ["run_zero_shot", "run_linear_probe", "run_kshot_probe", "METRICS"]

METRICS = ("acc1", "acc5", "mean_per_class_recall")


def _rows(result: dict, split, extra: dict) -> list[dict]:
    return [
        {"split": split.split, "metric": metric, "value": float(result[metric]), "n": len(split),
         "split_fingerprint": split.fingerprint, "extra": extra}
        for metric in METRICS
    ]


def _predictions(result: dict, labels: np.ndarray) -> dict[str, np.ndarray]:
    predictions = result["predictions"]
    return {"label": np.asarray(labels), **{k: np.asarray(v) for k, v in predictions.items()}}


def _train_features(context, encoder, dataset: str):
    """Features and labels of the probe's training data: train, plus the official val split when there is one."""
    from overspec.data.catalog import dataset_registry, has_role

    train = context.split(dataset, "train")
    feats = context.store.image_features(encoder, train)
    x, y = np.array(feats.x), train.labels
    if has_role(dataset_registry().get(dataset), "val"):
        val = context.split(dataset, "val")
        val_feats = context.store.image_features(encoder, val)
        x, y = np.concatenate([x, np.asarray(val_feats.x)]), np.concatenate([y, val.labels])
    return x, y


def run_zero_shot(context, spec, unit) -> tuple[list[dict], dict[str, np.ndarray]]:
    """Score ``unit.dataset``'s test split zero-shot with its class names and prompt ensemble."""
    encoder = context.model(spec)
    test = context.split(unit.dataset, "test")
    if not test.classnames or not test.templates:
        raise ValueError(f"dataset {unit.dataset!r} has no class names or templates: zero-shot needs both")
    classifier = torch.from_numpy(np.array(context.store.text_classifier(encoder, test.classnames, test.templates)))
    feats = context.store.image_features(encoder, test)
    result = evaluate_zero_shot(np.array(feats.x), test.labels, classifier)
    extra = {"prompt_set": prompt_set_fingerprint(test.classnames, test.templates),
             "n_templates": len(test.templates), "n_classes": len(test.classnames), "features": "post-projection"}
    return _rows(result, test, extra), _predictions(result, test.labels)


def run_linear_probe(context, spec, unit) -> tuple[list[dict], dict[str, np.ndarray]]:
    """Fit the CLIP-protocol logistic-regression probe on train (C chosen on a carved val split), score on test."""
    encoder = context.model(spec)
    settings = context.config.linear_probe
    x, y = _train_features(context, encoder, unit.dataset)
    test = context.split(unit.dataset, "test")
    test_x = np.array(context.store.image_features(encoder, test).x)
    result = linear_probe(x, y, test_x, test.labels, seed=context.config.seed, val_fraction=settings.val_fraction,
                          max_iter=settings.max_iter, device=context.config.device)
    extra = {"C": result["C"], "val_acc1": result["val_acc1"], "n_train": result["n_train"], "n_val": result["n_val"],
             "n_fits": result["n_fits"], "probe_split": result["split_fingerprint"], "features": "post-projection"}
    return _rows(result, test, extra), _predictions(result, test.labels)


def run_kshot_probe(context, spec, unit) -> tuple[list[dict], dict[str, np.ndarray]]:
    """Fit k-shot probes for several seeds; records hold the mean over seeds, ``extra`` the spread and Cs."""
    k = int(unit.protocol.removeprefix("linear_probe_").removesuffix("shot"))
    encoder = context.model(spec)
    settings = context.config.linear_probe
    x, y = _train_features(context, encoder, unit.dataset)
    test = context.split(unit.dataset, "test")
    test_x = np.array(context.store.image_features(encoder, test).x)
    result = kshot_probe(x, y, test_x, test.labels, k=k, seeds=settings.kshot_seeds, max_iter=settings.max_iter,
                         device=context.config.device)
    rows = []
    for metric in METRICS:
        extra = {"k": k, "seeds": list(settings.kshot_seeds), "std": result["std"][metric],
                 "per_seed": [float(run[metric]) for run in result["per_seed"]],
                 "C_per_seed": [float(run["C"]) for run in result["per_seed"]]}
        rows.append({"split": test.split, "metric": metric, "value": result["mean"][metric], "n": len(test),
                     "split_fingerprint": test.fingerprint, "extra": extra})
    return rows, {}
