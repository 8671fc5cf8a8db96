"""Biometric units of a run: face verification, IJB, MAD and PAD for one model on one benchmark.

Embeddings come from the feature store (image + mirrored image, the insightface convention); the protocol
functions only see arrays. Attack detection is scored by a probe on frozen features and by zero-shot prompts,
each labelled in the records (``protocol`` = ``mad/probe``, ``pad/zero_shot``...).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

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


def _row(split: LabelledImages, metric: str, value: float, n: int, skipped: int, extra: dict) -> dict:
    return {"split": split.split, "metric": metric, "value": float(value), "n": n,
            "split_fingerprint": split.fingerprint, "extra": {**extra, "skipped_images": skipped}}


def _require_finite(benchmark: str, what: str, values: np.ndarray, names: np.ndarray | None = None) -> None:
    """Raise a one-line ValueError naming ``benchmark`` when ``values`` holds NaN or infinity."""
    broken = ~np.isfinite(np.asarray(values, dtype=np.float64))
    if broken.any():
        first = int(np.flatnonzero(broken)[0])
        label = f"index {first}" if names is None else f"{names[first]}"
        raise ValueError(f"benchmark {benchmark!r}: {int(broken.sum())} of {broken.size} {what} are NaN or "
                         f"infinite (first: {label})")


def run_verification(context, spec, unit) -> tuple[list[dict], dict[str, np.ndarray]]:
    """insightface 10-fold accuracy (flip-sum embeddings), its std, and TAR at FAR 1e-3 over all pairs.

    Pairs that involve an image skipped as unreadable are left out; ``n`` counts the images of the pairs scored.
    """
    entry = context.benchmark(unit.dataset)
    split = benchmark_splits(context, entry)["pairs"]
    feats = context.store.image_features(context.model(spec), split, view="flip")
    issame = context.extras[("biometric", entry.name, "issame")]
    pair_ok = feats.valid[0::2] & feats.valid[1::2]
    if not pair_ok.any():
        raise ValueError(f"benchmark {entry.name!r}: every one of its {pair_ok.size} pairs involves an unreadable "
                         "image; nothing left to evaluate")
    images = np.repeat(pair_ok, 2)
    result = _evaluate_verification(entry.name, np.asarray(feats.x)[images], issame[pair_ok])
    n, skipped = int(images.sum()), feats.n_skipped
    extra = {"convention": "insightface 10-fold, threshold on 9 folds, flip-sum embeddings"}
    rows = [_row(split, "accuracy", result["accuracy"], n, skipped, extra),
            _row(split, "accuracy_std", result["accuracy_std"], n, skipped, extra),
            _row(split, "tar_at_far_1e-3", result["tar_at_far"]["tar"], n, skipped,
                 {**extra, "rule": result["tar_at_far"]["rule"], "reachable": bool(result["tar_at_far"]["reachable"])})]
    return rows, {}


def _evaluate_verification(benchmark: str, x: np.ndarray, issame: np.ndarray) -> dict:
    from overspec.protocols.verification import evaluate_verification, flip_sum_embeddings

    joint = flip_sum_embeddings(x[:, 0], x[:, 1])
    _require_finite(benchmark, "pair similarities", np.einsum("ij,ij->i", joint[0::2], joint[1::2]))
    return evaluate_verification(x[:, 0], x[:, 1], issame)


def run_ijb(context, spec, unit) -> tuple[list[dict], dict[str, np.ndarray]]:
    """IJB 1:1 TAR at FAR 1e-6..1e-1 (insightface rule; at-most rule alongside) and 1:N TPIR@FPIR and rank-1.

    Images skipped as unreadable leave their templates; a template left empty drops its pairs and 1:N entries.
    ``n`` counts the face images used.
    """
    from overspec.protocols.ijb import evaluate_ijb

    entry = context.benchmark(unit.dataset)
    split = benchmark_splits(context, entry)["faces"]
    feats = context.store.image_features(context.model(spec), split, view="flip")
    meta = _meta_of_faces(entry.name, context.extras[("biometric", entry.name, "meta")], feats.valid)
    _require_finite(entry.name, "faceness scores", meta.scores, np.asarray(meta.image_names, dtype=object))
    x = np.asarray(feats.x)[feats.valid]
    result = evaluate_ijb(meta, x[:, 0], x[:, 1])
    n, skipped = meta.num_faces, feats.n_skipped
    verification = result["verification"]
    unreachable = set(verification["unreachable_fars"])
    rows = []
    for far, tar in verification["tar_at_far"][_IJB_RULE].items():
        extra = {"rule": _IJB_RULE, "at_most": verification["tar_at_far"]["at_most"][far],
                 "reachable": far not in unreachable, "pooling": "N1D1F1 media-average, template-sum"}
        rows.append(_row(split, f"tar_at_far_{far:g}", tar, n, skipped, extra))
    for probe_set, values in result.get("identification", {}).items():
        extra = {"probes": probe_set, "galleries": sorted(values["per_gallery"]),
                 "convention": "open set, TPIR averaged over galleries (insightface ijb_evals)"}
        rows.append(_row(split, "rank1", values["rank"][1], n, skipped, extra))
        for fpir, tpir in values["tpir_at_fpir"].items():
            rows.append(_row(split, f"tpir_at_fpir_{fpir:g}", tpir, n, skipped, extra))
    return rows, {}


def _meta_of_faces(benchmark: str, meta, keep: np.ndarray):
    """The IJB meta data restricted to the faces in ``keep``: templates left empty lose their pairs and 1:N rows."""
    from overspec.data.formats.ijb import TemplateSubjects

    if keep.all():
        return meta
    templates = np.unique(meta.template_ids[keep])
    pair_ok = np.isin(meta.pair_t1, templates) & np.isin(meta.pair_t2, templates)
    if not pair_ok.any():
        raise ValueError(f"benchmark {benchmark!r}: no template pair is left once unreadable images are skipped")

    def lists(by_name: dict) -> dict:
        kept = {name: np.isin(t.template_ids, templates) for name, t in by_name.items()}
        return {name: TemplateSubjects(by_name[name].template_ids[m], by_name[name].subject_ids[m])
                for name, m in kept.items() if m.any()}

    return dataclasses.replace(
        meta, image_names=tuple(name for name, k in zip(meta.image_names, keep, strict=True) if k),
        template_ids=meta.template_ids[keep], media_ids=meta.media_ids[keep], landmarks=meta.landmarks[keep],
        scores=meta.scores[keep], pair_t1=meta.pair_t1[pair_ok], pair_t2=meta.pair_t2[pair_ok],
        pair_labels=meta.pair_labels[pair_ok], galleries=lists(meta.galleries), probes=lists(meta.probes),
    )


def run_attack(context, spec, unit) -> tuple[list[dict], dict[str, np.ndarray]]:
    """MAD or PAD metrics of one scoring method (``unit.protocol`` = ``<kind>/<scoring>``).

    Samples skipped as unreadable are left out of every split; ``n`` counts the test samples scored.
    """
    from overspec.protocols import attack_detection as ad

    entry = context.benchmark(unit.dataset)
    scoring = unit.protocol.split("/", 1)[1]
    splits = benchmark_splits(context, entry)
    encoder = context.model(spec)
    kept, skipped = {}, 0
    for role in (r for r in splits if r != "train" or scoring == "probe"):
        feats = context.store.image_features(encoder, splits[role])
        index = np.flatnonzero(feats.valid)
        if index.size == 0:
            raise ValueError(f"benchmark {entry.name!r}: all {len(feats.valid)} images of its {role!r} split are "
                             "unreadable; nothing left to evaluate")
        kept[role] = (splits[role].subset(index), np.asarray(feats.x)[index])
        skipped += feats.n_skipped
    score = _attack_scorer(context, encoder, entry.name, scoring, kept)
    scored = {role: ad.AttackScores.of(split, _finite_scores(entry.name, role, scoring, score(x)))
              for role, (split, x) in kept.items() if role != "train"}
    result = ad.evaluate_scores(entry.name, entry.kind, scoring, scored["test"], scored.get("dev"))
    n = len(scored["test"].scores)
    rows = []
    for row in result.rows():
        extra = {"scoring": row["scoring"], "level": row["level"], "convention": row["convention"],
                 "reachable": bool(row["reachable"]), "n_bona_fide": row["n_bona_fide"], "n_attack": row["n_attack"]}
        rows.append(_row(splits["test"], row["metric"], row["value"], n, skipped, extra))
    return rows, {}


def _attack_scorer(context, encoder, benchmark: str, scoring: str,
                   kept: dict[str, tuple[LabelledImages, np.ndarray]]) -> Callable[[np.ndarray], np.ndarray]:
    """The function from features to attack scores (higher = bona fide) of one scoring method."""
    from overspec.protocols import attack_detection as ad

    if scoring == "own_head":
        return encoder.head.scores
    if scoring == "probe":
        train, train_x = kept["train"]
        return functools.partial(ad.probe_scores, train_x, train.labels, seed=context.config.seed)
    test = kept["test"][0]
    classifier = torch.from_numpy(np.array(context.store.text_classifier(
        encoder, test.classnames, test.templates, dataset=f"{benchmark}/{test.split}")))
    return functools.partial(ad.zero_shot_scores, classifier=classifier)


def _finite_scores(benchmark: str, role: str, scoring: str, scores: np.ndarray) -> np.ndarray:
    """``scores`` unchanged, after checking that none is NaN or infinite (the error names benchmark and split)."""
    _require_finite(benchmark, f"{scoring} attack scores of its {role!r} split", scores)
    return scores
