"""Morphing (MAD) and presentation (PAD) attack detection on scores and frozen features, never on models.

A model can be scored three ways, and every result says which (study.md §1.8: the study's cross-task cells come
from unnamed heads or probes, so overspec labels each one):

* ``own_head``: scores from the model's own binary head (MADation / FoundPAD), passed in as numbers;
* ``probe``: a class-balanced logistic-regression probe fitted on frozen features of the protocol's training split;
* ``zero_shot``: the softmax probability of the bona fide prompt ("a photo of a real face") against the attack
  prompt ("a photo of a spoof / morphed face") from a text classifier.

Scores are P(bona fide) or any score where higher = more bona fide (biometric-protocols.md §1).

Metrics (biometric-protocols.md §6): MAD reports D-EER (SMDD / MADation argmin rule), APCER@BPCER and
BPCER@APCER at 1 / 10 / 20 % under each operating-point rule (``at_most`` unsuffixed, ``nearest`` = MADation's,
``bob`` = bob.measure's), AUC, and per morphing method (attack type) the D-EER (with their average and worst) and
the six operating points under each rule, as MADation's Table 1 and the study's Table C report them. Per-method
metrics are named ``<metric>[<attack type>]``; every operating point carries its ``rule`` and, per method, its
``attack_type`` in the record's extra. PAD reports, on video-level scores (mean of frame scores), the HTER at the
test set's own EER threshold (FoundPAD / DG-FAS convention, optimistic, labelled ``test_eer``), the HTER at a
threshold fixed on the dev split when there is one, AUC, and ISO/IEC 30107-3 APCER per PAI species, APCER_AP,
BPCER and ACER at that threshold (its ``rule`` names the threshold's source).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import torch
from numpy.typing import ArrayLike

from overspec import metrics
from overspec.data.base import LabelledImages
from overspec.data.biometric.attack_list import TASKS, video_scores
from overspec.protocols.zero_shot import zero_shot_logits
from overspec.errors import InputError

__all__ = [
    "SCORING_METHODS", "OPERATING_POINTS", "AttackScores", "AttackDetectionResult",
    "probe_scores", "zero_shot_scores", "evaluate_scores",
    "evaluate_own_head", "evaluate_probe", "evaluate_zero_shot",
]

logger = logging.getLogger(__name__)

SCORING_METHODS = ("own_head", "probe", "zero_shot")
OPERATING_POINTS = (0.01, 0.10, 0.20)
#: each operating-point rule and the suffix of its metric names (the at-most rule's names are unsuffixed)
RULE_SUFFIXES = {"at_most": "", "nearest": "_nearest", "bob": "_bob"}
RULE_LABELS = {
    "at_most": "at most on the full ROC (scikit-learn roc_curve, drop_intermediate=False; realised rate <= target)",
    "nearest": "SMDD / MADation nearest ROC point (may exceed the target)",
    "bob": "bob.measure far_threshold / frr_threshold (threshold on the attack / bona fide scores)",
}


@dataclass(frozen=True)
class AttackScores:
    """Scores of one split (higher = bona fide) with labels (1 = bona fide), attack types and video ids."""

    scores: np.ndarray
    labels: np.ndarray
    attack_types: np.ndarray
    video_ids: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.scores)
        if not (len(self.labels) == len(self.attack_types) == len(self.video_ids) == n):
            raise InputError(f"scores ({n}), labels ({len(self.labels)}), attack_types ({len(self.attack_types)}) "
                             f"and video_ids ({len(self.video_ids)}) must have the same length")
        if not np.isin(self.labels, (0, 1)).all():
            raise InputError("labels must be 1 (bona fide) or 0 (attack)")
        if not np.isfinite(self.scores).all():
            raise InputError("scores contain NaN or infinite values")

    @classmethod
    def of(cls, split: LabelledImages, scores: ArrayLike) -> AttackScores:
        """Pair ``scores`` with a protocol split (its labels and ``info['attack_type']`` / ``info['video_id']``)."""
        n = len(split)
        info = split.info
        return cls(np.asarray(scores, dtype=np.float64).reshape(-1), np.asarray(split.labels),
                   np.asarray(info.get("attack_type", [""] * n), dtype=object),
                   np.asarray(info.get("video_id", [str(i) for i in range(n)]), dtype=object))

    @property
    def bona_fide(self) -> np.ndarray:
        """Scores of the bona fide samples."""
        return self.scores[self.labels == 1]

    @property
    def attack(self) -> np.ndarray:
        """Scores of the attack samples."""
        return self.scores[self.labels == 0]

    def at_video_level(self) -> AttackScores:
        """One score per video: the mean of its frame scores (SSDG / FoundPAD)."""
        v = video_scores(self.scores, self.video_ids, self.labels, self.attack_types)
        return AttackScores(v.scores, v.labels.astype(np.int64), v.attack_types, v.video_ids)


@dataclass(frozen=True)
class AttackDetectionResult:
    """Metrics of one protocol, scoring method and level; ``conventions`` names the rule behind each metric."""

    protocol: str
    task: str
    scoring: str
    level: str
    metrics: dict[str, float]
    conventions: dict[str, str]
    n_bona_fide: int
    n_attack: int
    unreachable: tuple[str, ...] = field(default=())
    details: dict[str, dict[str, object]] = field(default_factory=dict)

    def rows(self) -> list[dict[str, object]]:
        """One tidy dict per metric, carrying the scoring method, level, convention and the metric's ``details``
        (its operating-point ``rule`` and target, its ``attack_type`` when it covers one morphing method)."""
        return [{"protocol": self.protocol, "task": self.task, "metric": name, "value": value,
                 "scoring": self.scoring, "level": self.level, "convention": self.conventions.get(name, ""),
                 "n_bona_fide": self.n_bona_fide, "n_attack": self.n_attack, "reachable": name not in self.unreachable,
                 "details": self.details.get(name, {})}
                for name, value in self.metrics.items()]


def _l2_normalised(features: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    return features / np.maximum(norms, 1e-12)


def probe_scores(train_features: ArrayLike, train_labels: ArrayLike, test_features: ArrayLike, *, seed: int = 0,
                 c: float = 1.0, normalise: bool = True) -> np.ndarray:
    """P(bona fide) from a class-balanced logistic-regression probe fitted on frozen training features.

    Features are L2-normalised first (as CLIP embeddings are compared) unless ``normalise`` is False.
    """
    x_train = np.asarray(train_features, dtype=np.float64)
    x_test = np.asarray(test_features, dtype=np.float64)
    y = np.asarray(train_labels)
    if set(np.unique(y).tolist()) != {0, 1}:
        raise InputError(f"the probe needs bona fide (1) and attack (0) training samples, got labels {np.unique(y)}")
    if x_train.ndim != 2 or x_test.ndim != 2 or x_train.shape[1] != x_test.shape[1]:
        raise InputError(f"train features {x_train.shape} and test features {x_test.shape} must be (N, D) alike")
    if normalise:
        x_train, x_test = _l2_normalised(x_train), _l2_normalised(x_test)
    from sklearn.linear_model import LogisticRegression  # on first fit: stored units never need scikit-learn

    probe = LogisticRegression(C=c, class_weight="balanced", max_iter=2000, random_state=seed)
    probe.fit(x_train, y)
    return probe.predict_proba(x_test)[:, list(probe.classes_).index(1)]


def zero_shot_scores(features: ArrayLike, classifier: ArrayLike | torch.Tensor, *, bona_fide_column: int = 1,
                     scale: float = 100.0) -> np.ndarray:
    """Softmax probability of the bona fide prompt column of a (D, C) text classifier (CLIP zero-shot)."""
    weights = torch.as_tensor(np.asarray(classifier) if not isinstance(classifier, torch.Tensor) else classifier)
    if weights.ndim != 2 or not 0 <= bona_fide_column < weights.shape[1] or weights.shape[1] < 2:
        raise InputError(f"classifier of shape {tuple(weights.shape)} needs >= 2 columns including column "
                         f"{bona_fide_column} (bona fide)")
    logits = zero_shot_logits(np.asarray(features, dtype=np.float32), weights.float(), scale)
    return torch.softmax(logits.double(), dim=1)[:, bona_fide_column].numpy()


@dataclass
class _Metrics:
    """Metrics being collected: values, conventions, per-metric details and the unreachable targets."""

    values: dict[str, float] = field(default_factory=dict)
    conventions: dict[str, str] = field(default_factory=dict)
    details: dict[str, dict[str, object]] = field(default_factory=dict)
    unreachable: list[str] = field(default_factory=list)

    def add(self, name: str, value: float, convention: str, **details: object) -> None:
        """Record one metric with its convention and, when given, its details."""
        self.values[name], self.conventions[name] = float(value), convention
        if details:
            self.details[name] = details


def _rules_for(bona_fide: np.ndarray, attack: np.ndarray, rules: tuple[str, ...]) -> tuple[str, ...]:
    """``rules`` less bob's when it cannot run (its threshold finders need two scores of each class)."""
    if "bob" not in rules or min(bona_fide.size, attack.size) >= 2:
        return rules
    logger.warning("only %d bona fide / %d attack scores: bob's operating points left out", bona_fide.size,
                   attack.size)
    return tuple(rule for rule in rules if rule != "bob")


def _operating_point_metrics(bona_fide: np.ndarray, attack: np.ndarray, out: _Metrics, rules: tuple[str, ...],
                             attack_type: str | None = None) -> None:
    """BPCER@APCER and APCER@BPCER at every operating point under each of ``rules``, for the pooled attacks or,
    given ``attack_type``, one morphing method's."""
    targets = np.asarray(OPERATING_POINTS)
    where = "" if attack_type is None else f"[{attack_type}]"
    scope = {} if attack_type is None else {"attack_type": attack_type}
    for rule in _rules_for(bona_fide, attack, rules):
        bpcer = metrics.bpcer_at_apcer(bona_fide, attack, targets, rule=rule)
        apcer = metrics.apcer_at_bpcer(bona_fide, attack, targets, rule=rule)
        for k, op in enumerate(OPERATING_POINTS):
            pct = round(op * 100)
            for stem, point in ((f"bpcer@apcer{pct}", bpcer), (f"apcer@bpcer{pct}", apcer)):
                name = f"{stem}{RULE_SUFFIXES[rule]}{where}"
                out.add(name, point.value[k], RULE_LABELS[rule], rule=rule, operating_point=op, **scope)
                if not point.reachable[k]:
                    out.unreachable.append(name)


def _mad_metrics(data: AttackScores) -> tuple[dict, dict, list, dict]:
    """Pooled metrics and per-method D-EERs first (the original records), then bob's and the per-method points."""
    out = _Metrics()
    deer = metrics.d_eer(data.bona_fide, data.attack)
    out.add("d_eer", deer.value, "SMDD / MADation: APCER at argmin |TPR + APCER - 1|")
    out.add("eer_bob", metrics.eer(data.bona_fide, data.attack).value, "bob.measure EER")
    out.add("auc", metrics.auc(data.bona_fide, data.attack), "exact ROC AUC")
    _operating_point_metrics(data.bona_fide, data.attack, out, ("at_most", "nearest"))
    methods = sorted(set(data.attack_types[data.labels == 0].tolist()))
    morphs = {m: data.scores[(data.labels == 0) & (data.attack_types == m)] for m in methods}
    per_method = {m: metrics.d_eer(data.bona_fide, morphs[m]).value for m in methods}
    for method, value in per_method.items():
        out.add(f"d_eer[{method}]", value, "D-EER on all bona fide + this method's morphs", attack_type=method)
    if per_method:
        label = "mean / max of the per-method D-EERs (MADation)"
        out.add("d_eer_average", np.mean(list(per_method.values())), label)
        out.add("d_eer_worst", np.max(list(per_method.values())), label)
    _operating_point_metrics(data.bona_fide, data.attack, out, ("bob",))
    for method in methods:
        _operating_point_metrics(data.bona_fide, morphs[method], out, tuple(RULE_SUFFIXES), method)
    return out.values, out.conventions, out.unreachable, out.details


def _pad_metrics(data: AttackScores, dev: AttackScores | None) -> tuple[dict, dict, list, dict]:
    out: dict[str, float] = {}
    conv: dict[str, str] = {}
    test_eer = metrics.hter_at_test_eer(data.bona_fide, data.attack, method="argmin")
    out["hter_test_eer"] = test_eer.value
    conv["hter_test_eer"] = "threshold at the test set's own EER (FoundPAD / DG-FAS; optimistic)"
    out["auc"], conv["auc"] = metrics.auc(data.bona_fide, data.attack), "exact ROC AUC"
    out["eer_bob"], conv["eer_bob"] = metrics.eer(data.bona_fide, data.attack).value, "bob.measure EER"
    threshold, source, rule = test_eer.threshold, "test-EER threshold", test_eer.criterion
    if dev is not None:
        dev_hter = metrics.hter(dev.bona_fide, dev.attack, data.bona_fide, data.attack, criterion="eer")
        out["hter_dev"] = dev_hter.value
        conv["hter_dev"] = "threshold at the dev split's EER (ISO / Idiap a priori)"
        threshold, source, rule = dev_hter.threshold, "dev-EER threshold", dev_hter.criterion
    species = data.attack_types[data.labels == 0].astype(str)
    iso = metrics.iso30107(data.bona_fide, data.attack, np.where(species == "", "unspecified", species), threshold)
    for name, value in iso.apcer.items():
        out[f"apcer[{name}]"] = value
        conv[f"apcer[{name}]"] = f"ISO/IEC 30107-3 at the {source}"
    for name in ("apcer_ap", "bpcer", "acer"):
        out[name] = float(getattr(iso, name))
        conv[name] = f"ISO/IEC 30107-3 at the {source}"
    out["threshold"], conv["threshold"] = float(threshold), source
    iso_names = [f"apcer[{name}]" for name in iso.apcer] + ["apcer_ap", "bpcer", "acer", "threshold"]
    return out, conv, [], {name: {"rule": rule} for name in iso_names}


def evaluate_scores(protocol: str, task: str, scoring: str, test: AttackScores, dev: AttackScores | None = None,
                    *, video_level: bool | None = None) -> AttackDetectionResult:
    """Compute the MAD or PAD metrics of ``test`` scores (``dev`` fixes the PAD a-priori threshold).

    ``video_level`` defaults to True for PAD (frame scores averaged per video, as DG-FAS papers report) and False
    for MAD (single images).
    """
    if task not in TASKS:
        raise InputError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")
    if scoring not in SCORING_METHODS:
        raise InputError(f"unknown scoring {scoring!r}; expected one of {', '.join(SCORING_METHODS)}")
    video = task == "pad" if video_level is None else video_level
    if video:
        test = test.at_video_level()
        dev = dev.at_video_level() if dev is not None else None
    if task == "mad":
        values, conventions, unreachable, details = _mad_metrics(test)
    else:
        values, conventions, unreachable, details = _pad_metrics(test, dev)
    logger.debug("%s %s %s: %s", protocol, task, scoring, values)
    return AttackDetectionResult(protocol, task, scoring, "video" if video else "frame", values, conventions,
                                 int((test.labels == 1).sum()), int((test.labels == 0).sum()), tuple(unreachable),
                                 details)


def evaluate_own_head(protocol: str, task: str, test: AttackScores, dev: AttackScores | None = None, *,
                      video_level: bool | None = None) -> AttackDetectionResult:
    """Metrics of scores from the model's own binary head (``scoring="own_head"``)."""
    return evaluate_scores(protocol, task, "own_head", test, dev, video_level=video_level)


def _with_scores(split: AttackScores, scores: np.ndarray) -> AttackScores:
    return AttackScores(np.asarray(scores, dtype=np.float64), split.labels, split.attack_types, split.video_ids)


def evaluate_probe(protocol: str, task: str, train_features: ArrayLike, train_labels: ArrayLike,
                   test_features: ArrayLike, test: AttackScores, dev_features: ArrayLike | None = None,
                   dev: AttackScores | None = None, *, seed: int = 0, c: float = 1.0,
                   video_level: bool | None = None) -> AttackDetectionResult:
    """Fit a balanced logistic probe on the training features, score test (and dev) (``scoring="probe"``).

    ``test`` / ``dev`` carry the labels, attack types and video ids; their ``scores`` are replaced by the probe's.
    """
    test_scores = probe_scores(train_features, train_labels, test_features, seed=seed, c=c)
    dev_scored = None
    if dev is not None and dev_features is not None:
        dev_scored = _with_scores(dev, probe_scores(train_features, train_labels, dev_features, seed=seed, c=c))
    return evaluate_scores(protocol, task, "probe", _with_scores(test, test_scores), dev_scored,
                           video_level=video_level)


def evaluate_zero_shot(protocol: str, task: str, test_features: ArrayLike, classifier: ArrayLike | torch.Tensor,
                       test: AttackScores, dev_features: ArrayLike | None = None, dev: AttackScores | None = None,
                       *, bona_fide_column: int = 1, video_level: bool | None = None) -> AttackDetectionResult:
    """Score with a (D, C) prompt classifier (columns in label order: attack, bona fide) (``scoring="zero_shot"``)."""
    scores = zero_shot_scores(test_features, classifier, bona_fide_column=bona_fide_column)
    dev_scored = None
    if dev is not None and dev_features is not None:
        dev_scored = _with_scores(dev, zero_shot_scores(dev_features, classifier, bona_fide_column=bona_fide_column))
    return evaluate_scores(protocol, task, "zero_shot", _with_scores(test, scores), dev_scored,
                           video_level=video_level)
