"""HTER, ISO/IEC 30107-3 per-species PAD metrics and the MAD D-EER.

Convention: higher = more genuine / bona fide, accept iff score >= threshold (attack score >= t is a false
accept). References: bob.measure ``eer_threshold`` / ``min_hter_threshold``; bob.pad.base ``error_utils``
(``apcer_bpcer``, ``calc_threshold``); SSDG / FoundPAD for the test-EER HTER; SMDD / MADation for the D-EER.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from overspec.metrics._eer import EERResult, bob_eer_index, bob_min_hter_index, eer, eer_from_sweep
from overspec.metrics._operating import far_threshold, frr_threshold
from overspec.metrics._roc import sweep
from overspec.metrics._validation import as_scores, as_thresholds, check_choice
from overspec.errors import InputError

logger = logging.getLogger(__name__)

HTER_CRITERIA = ("eer", "min-hter")
TEST_EER_METHODS = ("argmin", "bob", "ssdg")


@dataclass(frozen=True)
class HTERResult:
    """Half total error rate (FAR + FRR) / 2 at ``threshold``, with the two rates and how the threshold was chosen."""

    value: float
    far: float
    frr: float
    threshold: float
    criterion: str


@dataclass(frozen=True)
class ISO30107Result:
    """ISO/IEC 30107-3 metrics at one threshold: APCER per PAI species, APCER_AP (worst species), BPCER, ACER."""

    apcer: dict[str, float]
    apcer_ap: float
    bpcer: float
    acer: float
    apcer_pooled: float
    threshold: float


def _rates_at(genuine: np.ndarray, impostor: np.ndarray, threshold: float) -> tuple[float, float]:
    return float(np.count_nonzero(impostor >= threshold) / impostor.size), float(
        np.count_nonzero(genuine < threshold) / genuine.size
    )


def hter(
    dev_genuine: ArrayLike,
    dev_impostor: ArrayLike,
    test_genuine: ArrayLike,
    test_impostor: ArrayLike,
    criterion: str = "eer",
) -> HTERResult:
    """HTER on the test set at a threshold fixed a priori on the development set (ISO / Idiap practice).

    ``criterion="eer"`` uses bob's ``eer_threshold`` on dev, ``"min-hter"`` bob's ``min_hter_threshold``.
    Higher score = more genuine; accept iff score >= threshold.

    >>> result = hter([0.9, 0.7], [0.2, 0.4], [0.8, 0.5], [0.3, 0.6])
    >>> result.threshold, result.far, result.frr, result.value
    (0.55, 0.5, 0.5, 0.5)
    """
    check_choice(criterion, "criterion", HTER_CRITERIA)
    dev = sweep(as_scores(dev_genuine, "dev_genuine"), as_scores(dev_impostor, "dev_impostor"))
    genuine = as_scores(test_genuine, "test_genuine")
    impostor = as_scores(test_impostor, "test_impostor")
    threshold = (bob_eer_index if criterion == "eer" else bob_min_hter_index)(dev)[0]
    far, frr = _rates_at(genuine, impostor, threshold)
    return HTERResult((far + frr) / 2.0, far, frr, threshold, f"dev-{criterion}")


def hter_at_test_eer(genuine: ArrayLike, impostor: ArrayLike, method: str = "argmin") -> HTERResult:
    """Cross-dataset PAD "HTER" at the threshold of the test set's own EER (DG-FAS convention; optimistic).

    The threshold sees the test labels, so report it only under this name. ``method="argmin"`` is FoundPAD's
    (ROC argmin point, HTER = (APCER + BPCER) / 2 there), ``"ssdg"`` SSDG / FLIP's probability grid, ``"bob"``
    bob's EER threshold. Higher score = more bona fide.

    >>> round(hter_at_test_eer([0.9, 0.8, 0.4], [0.1, 0.5, 0.2]).value, 4)
    0.3333
    """
    check_choice(method, "method", TEST_EER_METHODS)
    result = eer(genuine, impostor, method=method)
    return HTERResult((result.far + result.frr) / 2.0, result.far, result.frr, result.threshold, f"test-eer-{method}")


def d_eer(bona_fide: ArrayLike, attack: ArrayLike) -> EERResult:
    """MAD detection EER as SMDD / MADation report it: APCER at argmin abs(TPR + APCER - 1) of the default ROC.

    Same as ``eer(bona_fide, attack, method="argmin")``; higher score = more bona fide.

    >>> d_eer([0.9, 0.8, 0.4], [0.1, 0.5, 0.2]).value
    0.3333333333333333
    """
    return eer_from_sweep(sweep(as_scores(bona_fide, "bona_fide"), as_scores(attack, "attack")), "argmin")


def _species_groups(attack: np.ndarray, attack_species: ArrayLike) -> dict[str, np.ndarray]:
    labels = np.asarray(attack_species).astype(str)
    if labels.shape != attack.shape:
        raise InputError(f"attack_species must have one label per attack score: {labels.shape} vs {attack.shape}")
    return {str(name): attack[labels == name] for name in np.unique(labels)}


def iso30107(
    bona_fide: ArrayLike, attack: ArrayLike, attack_species: ArrayLike, threshold: float
) -> ISO30107Result:
    """ISO/IEC 30107-3 APCER per PAI species, APCER_AP = max over species, BPCER and ACER = (APCER_AP + BPCER) / 2.

    Higher score = more bona fide; an attack with score >= threshold is accepted (bob.pad.base ``apcer_bpcer``).

    >>> result = iso30107([0.9, 0.6], [0.1, 0.7, 0.2, 0.3], ["print", "print", "replay", "replay"], 0.5)
    >>> result.apcer, result.apcer_ap, result.bpcer, result.acer
    ({'print': 0.5, 'replay': 0.0}, 0.5, 0.0, 0.25)
    """
    genuine = as_scores(bona_fide, "bona_fide")
    impostor = as_scores(attack, "attack")
    t = float(as_thresholds(threshold)[0])
    groups = _species_groups(impostor, attack_species)
    apcer = {name: float(np.count_nonzero(scores >= t) / scores.size) for name, scores in groups.items()}
    apcer_pooled, bpcer = _rates_at(genuine, impostor, t)
    apcer_ap = max(apcer.values())
    return ISO30107Result(apcer, apcer_ap, bpcer, (apcer_ap + bpcer) / 2.0, apcer_pooled, t)


_RATE_CRITERION = re.compile(r"^(bpcer|apcer)(\d+)$")


def iso30107_threshold(
    bona_fide: ArrayLike,
    attack: ArrayLike,
    attack_species: ArrayLike,
    criterion: str,
    far: float | None = None,
) -> float:
    """Threshold by a bob.pad.base ``calc_threshold`` criterion, usually computed on the development set.

    ``"eer"`` / ``"min-hter"``: bob sweep on pooled attacks; ``"far"``: bob ``far_threshold`` on pooled attacks at
    ``far``; ``"bpcerN"``: the maximum over species of each species' ``far_threshold(1/N)`` (APCER_AP <= 1/N, so
    BPCER20 = BPCER at APCER_AP <= 5 %); ``"apcerN"``: ``frr_threshold`` of the bona fide at 1/N.

    >>> iso30107_threshold([0.9, 0.6], [0.1, 0.7, 0.2, 0.3], ["print", "print", "replay", "replay"], "bpcer2")
    0.7
    """
    genuine = as_scores(bona_fide, "bona_fide")
    impostor = as_scores(attack, "attack")
    groups = _species_groups(impostor, attack_species)
    match = _RATE_CRITERION.match(criterion)
    if match:
        rate = 1.0 / float(match.group(2))
        if match.group(1) == "bpcer":
            return max(far_threshold(scores, rate) for scores in groups.values())
        return frr_threshold(genuine, rate)
    check_choice(criterion, "criterion", ("eer", "min-hter", "far", "bpcerN", "apcerN"))
    if criterion == "far":
        if far is None:
            raise InputError("criterion='far' needs the far= target rate")
        return far_threshold(impostor, far)
    pooled = sweep(genuine, impostor)
    return (bob_eer_index if criterion == "eer" else bob_min_hter_index)(pooled)[0]
