"""Typed inputs of protocol units, gathered from one model's features of one opened dataset or benchmark.

A protocol's ``run`` sees only these: features, labels, pair lists, IJB meta data, attack splits, and (when its
unit needs them) the text classifier, the binary head and the training features. Gathering is registered per
target kind in :data:`GATHERERS` (``general`` datasets and each biometric benchmark kind), so a new protocol on an
existing kind needs no gathering code, and a new kind brings one opener and one gatherer.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from overspec.data.base import LabelledImages
from overspec.features.store import Features
from overspec.protocols.base import GENERAL, Needs, UnitOutput, UnitPlan
from overspec.protocols.base import Protocol as BaseProtocol
from overspec.registry import Registry
from overspec.errors import InputError

__all__ = ["AttackInputs", "BlockInputs", "ClassificationInputs", "ComparedSources", "FeatureSource", "GATHERERS",
           "IJBInputs", "PairInputs", "SplitFeatures", "TrainFeatures", "compute_unit", "gather_inputs",
           "meta_of_faces", "require_finite", "scored_split"]


class FeatureSource(Protocol):
    """One model's view of the feature store (what gathering may ask of a model, and nothing else)."""

    def image(self, split: LabelledImages, view: str = "plain") -> Features:
        """Image features of ``split`` (``flip``: image and mirrored image)."""

    def text_classifier(self, classnames, templates, dataset: str) -> np.ndarray:
        """The ``(D, C)`` zero-shot classifier of a prompt set."""

    @property
    def head(self) -> Any:
        """The model's binary head (``scores(x)``), or None."""


@dataclass(frozen=True)
class SplitFeatures:
    """The usable rows of one split: features, labels and their positions in the split (skipped images absent)."""

    split: LabelledImages
    x: np.ndarray
    labels: np.ndarray
    index: np.ndarray

    @property
    def skipped(self) -> int:
        """How many images of the split were left out as unreadable."""
        return len(self.split) - len(self.index)


@dataclass(frozen=True)
class TrainFeatures:
    """A probe's training data (train plus the official val split when there is one) and its skipped images."""

    x: np.ndarray
    labels: np.ndarray
    skipped: int


@dataclass(frozen=True)
class ClassificationInputs:
    """A general-vision unit: test features, and the text classifier and training features when the unit needs them."""

    dataset: str
    test: SplitFeatures
    train: TrainFeatures | None
    classifier: np.ndarray | None
    seed: int
    device: str


@dataclass(frozen=True)
class PairInputs:
    """A verification unit: flip-view features of the images of the scorable pairs (2k, 2k+1) and their labels."""

    benchmark: str
    split: LabelledImages
    x: np.ndarray
    issame: np.ndarray
    n_skipped: int


@dataclass(frozen=True)
class IJBInputs:
    """An IJB unit: the meta data restricted to readable faces, the flip-view features of all faces as stored
    (memory-mapped, never copied whole) and the rows of the readable ones (``rows[k]`` is face ``k`` of ``meta``)."""

    benchmark: str
    split: LabelledImages
    meta: Any
    x: np.ndarray
    rows: np.ndarray
    n_skipped: int


@dataclass(frozen=True)
class AttackInputs:
    """A MAD/PAD unit: readable features of each split, the head or text classifier when the scoring needs them."""

    benchmark: str
    kind: str
    splits: Mapping[str, SplitFeatures]
    n_skipped: int
    head: Any
    classifier: np.ndarray | None
    seed: int


@dataclass(frozen=True)
class ComparedSources:
    """A fine-tune's features and its base's, for a unit that compares the two (``Needs.base``)."""

    model: FeatureSource
    base: FeatureSource


@dataclass(frozen=True)
class BlockInputs:
    """A block-comparison unit: the class token of every visual block, for the same images, from a fine-tune and from
    its base (``(N, blocks, width)`` each; images either model could not read are left out of both)."""

    dataset: str
    split: LabelledImages
    model: np.ndarray
    base: np.ndarray
    n_skipped: int


Gatherer = Callable[[Any, FeatureSource, Needs, int, str], Any]
GATHERERS: Registry[Gatherer] = Registry("input kind")


def gather_inputs(kind: str, opened: Any, source: FeatureSource | ComparedSources, needs: Needs, seed: int,
                  device: str) -> Any:
    """The typed inputs of a unit that needs ``needs`` on ``opened`` (a dataset or benchmark of ``kind``)."""
    return GATHERERS.get(needs.inputs or kind)(opened, source, needs, seed, device)


def compute_unit(protocol: BaseProtocol, plan: UnitPlan, kind: str, opened: Any,
                 source: FeatureSource | ComparedSources, settings: Any, seed: int, device: str) -> UnitOutput:
    """Gather one unit's typed inputs and run its protocol on them (what the runner does for a unit to compute).

    A ValueError inside a biometric unit (a metric refusing its scores, say) is re-raised naming the benchmark,
    the file it was read from and the unit, so that a one-line error says which input to look at.
    """
    try:
        return protocol.run(plan, gather_inputs(kind, opened, source, plan.needs, seed, device), settings)
    except ValueError as err:
        where = getattr(opened, "source", None)
        if kind == GENERAL or where is None:
            raise
        raise InputError(_naming_benchmark(str(err), opened.name, where, plan.name)) from err


def _naming_benchmark(message: str, benchmark: str, where: Path, unit: str) -> str:
    """``message`` led by the benchmark (once, when it already names it) and closed by its file and the unit."""
    named = f"benchmark {benchmark!r}"
    detail = message[len(named):].removeprefix(":").lstrip() if message.startswith(named) else message
    return f"{named}: {detail} (read from {where}; unit {unit})"


def require_finite(benchmark: str, what: str, values: np.ndarray, names: np.ndarray | None = None) -> None:
    """Raise a one-line ValueError naming ``benchmark`` when ``values`` holds NaN or infinity."""
    broken = ~np.isfinite(np.asarray(values, dtype=np.float64))
    if broken.any():
        first = int(np.flatnonzero(broken)[0])
        label = f"index {first}" if names is None else f"{names[first]}"
        raise InputError(f"benchmark {benchmark!r}: {int(broken.sum())} of {broken.size} {what} are NaN or "
                         f"infinite (first: {label})")


def _usable(feats: Features, split: LabelledImages, what: str) -> SplitFeatures:
    index = np.flatnonzero(feats.valid)
    if index.size == 0:
        raise InputError(f"{what}: all {len(split)} images are unreadable; nothing left to evaluate")
    return SplitFeatures(split, np.asarray(feats.x)[index], np.asarray(split.labels)[index], index)


def _general(opened, source: FeatureSource, needs: Needs, seed: int, device: str) -> ClassificationInputs:
    splits = opened.splits()
    test_split = splits[needs.evaluate_on if needs.evaluate_on in splits else "test"]
    test = _usable(source.image(test_split), test_split,
                   f"dataset {test_split.dataset!r} split {test_split.split!r}")
    classifier = None
    if needs.text_tower:
        if not test_split.classnames or not test_split.templates:
            raise InputError(f"dataset {opened.name!r} has no class names or templates: zero-shot needs both")
        classifier = np.array(source.text_classifier(test_split.classnames, test_split.templates,
                                                     f"{test_split.dataset}/{test_split.split}"))
    train = _train_features(opened, source) if needs.train_split else None
    return ClassificationInputs(opened.name, test, train, classifier, seed, device)


def _train_features(opened, source: FeatureSource) -> TrainFeatures:
    splits = opened.splits()
    parts = [splits[role] for role in ("train", "val") if role in splits]
    usable = [_usable(source.image(split), split, f"dataset {split.dataset!r} split {split.split!r}")
              for split in parts]
    return TrainFeatures(np.concatenate([u.x for u in usable]), np.concatenate([u.labels for u in usable]),
                         sum(u.skipped for u in usable))


def _verification(opened, source: FeatureSource, needs: Needs, seed: int, device: str) -> PairInputs:
    feats = source.image(opened.pairs, view="flip")
    pair_ok = feats.valid[0::2] & feats.valid[1::2]
    if not pair_ok.any():
        raise InputError(f"benchmark {opened.name!r}: every one of its {pair_ok.size} pairs involves an unreadable "
                         "image; nothing left to evaluate")
    images = np.repeat(pair_ok, 2)
    return PairInputs(opened.name, opened.pairs, np.asarray(feats.x)[images], opened.issame[pair_ok],
                      feats.n_skipped)


def _ijb(opened, source: FeatureSource, needs: Needs, seed: int, device: str) -> IJBInputs:
    feats = source.image(opened.faces, view="flip")
    meta = meta_of_faces(opened.name, opened.meta, feats.valid)
    require_finite(opened.name, "faceness scores", meta.scores, np.asarray(meta.image_names, dtype=object))
    return IJBInputs(opened.name, opened.faces, meta, feats.x, np.flatnonzero(feats.valid), feats.n_skipped)


def meta_of_faces(benchmark: str, meta, keep: np.ndarray):
    """The IJB meta data restricted to the faces in ``keep``: templates left empty lose their pairs and 1:N rows."""
    from overspec.data.formats.ijb import TemplateSubjects

    if keep.all():
        return meta
    templates = np.unique(meta.template_ids[keep])
    pair_ok = np.isin(meta.pair_t1, templates) & np.isin(meta.pair_t2, templates)
    if not pair_ok.any():
        raise InputError(f"benchmark {benchmark!r}: no template pair is left once unreadable images are skipped")

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


def _attack(opened, source: FeatureSource, needs: Needs, seed: int, device: str) -> AttackInputs:
    splits, skipped = {}, 0
    for role, split in opened.splits().items():
        if role == "train" and not needs.train_split:
            continue
        feats = source.image(split)
        splits[role] = _usable(feats, split, f"benchmark {opened.name!r}: its {role!r} split")
        skipped += feats.n_skipped
    classifier = None
    if needs.text_tower:
        test = opened.splits()["test"]
        classifier = np.array(source.text_classifier(test.classnames, test.templates, f"{opened.name}/{test.split}"))
    head = source.head if needs.head else None
    return AttackInputs(opened.name, opened.kind, splits, skipped, head, classifier, seed)


def scored_split(opened) -> LabelledImages:
    """The split a dataset or benchmark is scored on: ``test`` when it has one, else its only image list (pairs,
    IJB faces)."""
    splits = opened.splits()
    return splits["test"] if "test" in splits else next(iter(splits.values()))


def _blocks(opened, sources: ComparedSources, needs: Needs, seed: int, device: str) -> BlockInputs:
    split = scored_split(opened)
    if needs.sample and len(split) > needs.sample:
        chosen = np.sort(np.random.default_rng(seed).choice(len(split), needs.sample, replace=False))
        split = split.subset(chosen)
    mine, theirs = sources.model.image(split, view="blocks"), sources.base.image(split, view="blocks")
    keep = np.flatnonzero(mine.valid & theirs.valid)
    if keep.size < 2:
        raise InputError(f"dataset {opened.name!r}: fewer than two images both models could read; nothing to compare")
    return BlockInputs(opened.name, split, np.asarray(mine.x)[keep], np.asarray(theirs.x)[keep],
                       len(split) - int(keep.size))


for _name, _gatherer in (("blocks", _blocks), (GENERAL, _general), ("verification", _verification), ("ijb", _ijb), ("mad", _attack),
                         ("pad", _attack)):
    GATHERERS.register(_name, _gatherer)
