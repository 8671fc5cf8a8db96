"""Biometric units of a run: face verification, IJB, MAD and PAD for one model on one benchmark.

Embeddings come from the feature store (image + mirrored image, the insightface convention); the protocol
functions only see arrays. Attack detection is scored by a probe on frozen features and by zero-shot prompts,
each labelled in the records (``protocol`` = ``mad/probe``, ``pad/zero_shot``...).
"""

from __future__ import annotations

import numpy as np
import torch

from overspec.data.base import LabelledImages
from overspec.data.biometric.benchmarks import BiometricBenchmark, open_attack, open_ijb, open_verification

__all__ = ["benchmark_splits", "run_verification", "run_ijb", "run_attack", "ATTACK_SCORING"]

ATTACK_SCORING = ("own_head", "probe", "zero_shot")
_IJB_RULE = "nearest"


def benchmark_splits(context, entry: BiometricBenchmark) -> dict[str, LabelledImages]:
    """The image splits a benchmark's units embed, by role (opened once per run and cached on the context)."""
    key = ("biometric", entry.name)
    if key not in context.extras:
        root = context.data_root
        if entry.kind == "verification":
            pairs = open_verification(entry, root)
            splits = {"pairs": pairs.images_as_dataset(entry.name)}
            context.extras[key + ("issame",)] = pairs.issame
        elif entry.kind == "ijb":
            meta = open_ijb(entry, root)
            splits = {"faces": meta.faces_dataset(entry.name)}
            context.extras[key + ("meta",)] = meta
        else:
            protocol = open_attack(entry, root)
            splits = {name: protocol.split(name) for name in protocol.splits()}
        context.extras[key] = splits
    return context.extras[key]


def _row(split: LabelledImages, metric: str, value: float, extra: dict) -> dict:
    return {"split": split.split, "metric": metric, "value": float(value), "n": len(split),
            "split_fingerprint": split.fingerprint, "extra": extra}


def run_verification(context, spec, unit) -> tuple[list[dict], dict[str, np.ndarray]]:
    """insightface 10-fold accuracy (flip-sum embeddings), its std, and TAR at FAR 1e-3 over all pairs."""
    entry = context.benchmark(unit.dataset)
    split = benchmark_splits(context, entry)["pairs"]
    x = np.array(context.store.image_features(context.model(spec), split, view="flip").x)
    result = _evaluate_verification(x, context.extras[("biometric", entry.name, "issame")])
    extra = {"convention": "insightface 10-fold, threshold on 9 folds, flip-sum embeddings"}
    rows = [_row(split, "accuracy", result["accuracy"], extra), _row(split, "accuracy_std", result["accuracy_std"], extra),
            _row(split, "tar_at_far_1e-3", result["tar_at_far"]["tar"],
                 {**extra, "rule": result["tar_at_far"]["rule"], "reachable": bool(result["tar_at_far"]["reachable"])})]
    return rows, {}


def _evaluate_verification(x: np.ndarray, issame: np.ndarray) -> dict:
    from overspec.protocols.verification import evaluate_verification

    return evaluate_verification(x[:, 0], x[:, 1], issame)


def run_ijb(context, spec, unit) -> tuple[list[dict], dict[str, np.ndarray]]:
    """IJB 1:1 TAR at FAR 1e-6..1e-1 (insightface rule; at-most rule alongside) and 1:N TPIR@FPIR and rank-1."""
    from overspec.protocols.ijb import evaluate_ijb

    entry = context.benchmark(unit.dataset)
    split = benchmark_splits(context, entry)["faces"]
    meta = context.extras[("biometric", entry.name, "meta")]
    x = np.array(context.store.image_features(context.model(spec), split, view="flip").x)
    result = evaluate_ijb(meta, x[:, 0], x[:, 1])
    verification = result["verification"]
    unreachable = set(verification["unreachable_fars"])
    rows = []
    for far, tar in verification["tar_at_far"][_IJB_RULE].items():
        extra = {"rule": _IJB_RULE, "at_most": verification["tar_at_far"]["at_most"][far],
                 "reachable": far not in unreachable, "pooling": "N1D1F1 media-average, template-sum"}
        rows.append(_row(split, f"tar_at_far_{far:g}", tar, extra))
    for probe_set, values in result.get("identification", {}).items():
        extra = {"probes": probe_set, "galleries": sorted(values["per_gallery"]),
                 "convention": "open set, TPIR averaged over galleries (insightface ijb_evals)"}
        rows.append(_row(split, "rank1", values["rank"][1], extra))
        for fpir, tpir in values["tpir_at_fpir"].items():
            rows.append(_row(split, f"tpir_at_fpir_{fpir:g}", tpir, extra))
    return rows, {}


def run_attack(context, spec, unit) -> tuple[list[dict], dict[str, np.ndarray]]:
    """MAD or PAD metrics of one scoring method (``unit.protocol`` = ``<kind>/<scoring>``)."""
    from overspec.protocols import attack_detection as ad

    entry = context.benchmark(unit.dataset)
    scoring = unit.protocol.split("/", 1)[1]
    splits = benchmark_splits(context, entry)
    encoder = context.model(spec)
    test = splits["test"]
    dev = splits.get("dev")
    feats = {name: np.array(context.store.image_features(encoder, s).x) for name, s in splits.items()}
    test_scores = ad.AttackScores.of(test, np.zeros(len(test)))
    dev_scores = ad.AttackScores.of(dev, np.zeros(len(dev))) if dev is not None else None
    if scoring == "own_head":
        test_scores = ad.AttackScores.of(test, encoder.head.scores(feats["test"]))
        dev_scores = ad.AttackScores.of(dev, encoder.head.scores(feats["dev"])) if dev is not None else None
        result = ad.evaluate_own_head(entry.name, entry.kind, test_scores, dev_scores)
    elif scoring == "probe":
        result = ad.evaluate_probe(entry.name, entry.kind, feats["train"], splits["train"].labels, feats["test"],
                                   test_scores, feats.get("dev"), dev_scores, seed=context.config.seed)
    else:
        classifier = torch.from_numpy(np.array(context.store.text_classifier(encoder, test.classnames,
                                                                             test.templates)))
        result = ad.evaluate_zero_shot(entry.name, entry.kind, feats["test"], classifier, test_scores,
                                       feats.get("dev"), dev_scores)
    rows = []
    for row in result.rows():
        extra = {"scoring": row["scoring"], "level": row["level"], "convention": row["convention"],
                 "reachable": bool(row["reachable"]), "n_bona_fide": row["n_bona_fide"], "n_attack": row["n_attack"]}
        rows.append(_row(test, row["metric"], row["value"], extra))
    return rows, {}
