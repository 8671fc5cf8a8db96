"""General-vision units of a run: zero-shot and linear probe of one model on one dataset.

These functions are the only place where the runner's lazily loaded models and splits meet the protocols, which
themselves only see features and labels.
"""

from __future__ import annotations

import numpy as np
import torch

from overspec.protocols.linear_probe import kshot_probe, linear_probe
from overspec.features.text import prompt_set_fingerprint
from overspec.protocols.zero_shot import evaluate_zero_shot

__all__ = ["run_zero_shot", "run_linear_probe", "run_kshot_probe", "METRICS"]

METRICS = ("acc1", "acc5", "mean_per_class_recall")


def _rows(result: dict, split, n: int, extra: dict) -> list[dict]:
    return [
        {"split": split.split, "metric": metric, "value": float(result[metric]), "n": n,
         "split_fingerprint": split.fingerprint, "extra": extra}
        for metric in METRICS
    ]


def _predictions(result: dict, labels: np.ndarray, index: np.ndarray) -> dict[str, np.ndarray]:
    """Per-sample outputs with the true labels and each sample's index in the split (skipped images are absent)."""
    predictions = result["predictions"]
    return {"label": np.asarray(labels), "index": index, **{k: np.asarray(v) for k, v in predictions.items()}}


def _usable(context, encoder, split) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Features, labels and split indices of the images of ``split`` that decoded (all of them under "fail")."""
    feats = context.store.image_features(encoder, split)
    index = np.flatnonzero(feats.valid)
    if index.size == 0:
        raise ValueError(f"dataset {split.dataset!r} split {split.split!r}: all {len(split)} images are unreadable; "
                         "nothing left to evaluate")
    return np.asarray(feats.x)[index], np.asarray(split.labels)[index], index


def _train_features(context, encoder, dataset: str) -> tuple[np.ndarray, np.ndarray, int]:
    """Features and labels of the probe's training data (train, plus the official val split when there is one)
    and how many of its images were skipped."""
    from overspec.data.catalog import dataset_registry, has_role

    roles = ["train", "val"] if has_role(dataset_registry().get(dataset), "val") else ["train"]
    xs, ys, skipped = [], [], 0
    for role in roles:
        split = context.split(dataset, role)
        x, y, index = _usable(context, encoder, split)
        xs.append(x)
        ys.append(y)
        skipped += len(split) - len(index)
    return np.concatenate(xs), np.concatenate(ys), skipped


def run_zero_shot(context, spec, unit) -> tuple[list[dict], dict[str, np.ndarray]]:
    """Score ``unit.dataset``'s test split zero-shot with its class names and prompt ensemble."""
    encoder = context.model(spec)
    test = context.split(unit.dataset, "test")
    if not test.classnames or not test.templates:
        raise ValueError(f"dataset {unit.dataset!r} has no class names or templates: zero-shot needs both")
    classifier = torch.from_numpy(np.array(context.store.text_classifier(
        encoder, test.classnames, test.templates, dataset=f"{test.dataset}/{test.split}")))
    x, labels, index = _usable(context, encoder, test)
    result = evaluate_zero_shot(x, labels, classifier)
    extra = {"prompt_set": prompt_set_fingerprint(test.classnames, test.templates),
             "n_templates": len(test.templates), "n_classes": len(test.classnames), "features": "post-projection",
             "skipped_images": len(test) - len(index)}
    return _rows(result, test, len(index), extra), _predictions(result, labels, index)


def run_linear_probe(context, spec, unit) -> tuple[list[dict], dict[str, np.ndarray]]:
    """Fit the CLIP-protocol logistic-regression probe on train (C chosen on a carved val split), score on test."""
    encoder = context.model(spec)
    settings = context.config.linear_probe
    x, y, skipped = _train_features(context, encoder, unit.dataset)
    test = context.split(unit.dataset, "test")
    test_x, test_y, index = _usable(context, encoder, test)
    result = linear_probe(x, y, test_x, test_y, seed=context.config.seed, val_fraction=settings.val_fraction,
                          max_iter=settings.max_iter, device=context.config.device)
    extra = {"C": result["C"], "val_acc1": result["val_acc1"], "n_train": result["n_train"], "n_val": result["n_val"],
             "n_fits": result["n_fits"], "probe_split": result["split_fingerprint"], "features": "post-projection",
             "skipped_images": skipped + len(test) - len(index)}
    return _rows(result, test, len(index), extra), _predictions(result, test_y, index)


def run_kshot_probe(context, spec, unit) -> tuple[list[dict], dict[str, np.ndarray]]:
    """Fit k-shot probes for several seeds; records hold the mean over seeds, ``extra`` the spread and Cs."""
    k = int(unit.protocol.removeprefix("linear_probe_").removesuffix("shot"))
    encoder = context.model(spec)
    settings = context.config.linear_probe
    x, y, skipped = _train_features(context, encoder, unit.dataset)
    test = context.split(unit.dataset, "test")
    test_x, test_y, index = _usable(context, encoder, test)
    result = kshot_probe(x, y, test_x, test_y, k=k, seeds=settings.kshot_seeds, max_iter=settings.max_iter,
                         device=context.config.device)
    rows = []
    for metric in METRICS:
        extra = {"k": k, "seeds": list(settings.kshot_seeds), "std": result["std"][metric],
                 "per_seed": [float(run[metric]) for run in result["per_seed"]],
                 "C_per_seed": [float(run["C"]) for run in result["per_seed"]],
                 "skipped_images": skipped + len(test) - len(index)}
        rows.append({"split": test.split, "metric": metric, "value": result["mean"][metric], "n": len(index),
                     "split_fingerprint": test.fingerprint, "extra": extra})
    return rows, {}
