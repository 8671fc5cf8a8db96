"""The biometric protocols of a study: face verification, IJB 1:1 and 1:N, and MAD / PAD attack detection.

Each is one registered :class:`~overspec.protocols.base.Protocol` on typed inputs (embeddings of image and
mirrored image, the insightface convention; attack splits). Attack detection is scored by the model's own head,
a probe on frozen features and zero-shot prompts, each its own unit labelled in the records (``mad/probe``...).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from overspec.protocols import attack_detection as ad
from overspec.protocols.base import Needs, Protocol, ReportColumn, ReportGroup, ReportSection, Switch, UnitOutput, \
    UnitPlan
from overspec.protocols.inputs import AttackInputs, IJBInputs, PairInputs, require_finite
from overspec.errors import InputError

__all__ = ["ATTACK", "AttackSettings", "IJB", "VERIFICATION"]

_IJB_RULE = "nearest"
SCORING_LABELS = {"own_head": "own head", "probe": "probe", "zero_shot": "zero-shot"}


@dataclass(frozen=True)
class AttackSettings:
    """MAD / PAD attack detection: which scoring methods to run (each its own unit)."""

    enabled: bool = True
    scoring: tuple[str, ...] = ad.SCORING_METHODS

    def __post_init__(self) -> None:
        bad = [s for s in self.scoring if s not in ad.SCORING_METHODS]
        if bad:
            raise InputError(f"scoring values must be among {ad.SCORING_METHODS}, got {bad}")


def _row(split, metric: str, value: float, n: int, skipped: int, extra: dict) -> dict:
    return {"split": split.split, "metric": metric, "value": float(value), "n": n,
            "split_fingerprint": split.fingerprint, "extra": {**extra, "skipped_images": skipped}}


class Verification(Protocol):
    """insightface 10-fold accuracy (flip-sum embeddings), its std, and TAR at FAR 1e-3 over all pairs."""

    name = "verification"
    targets = ("verification",)
    settings_type = Switch
    report = ReportSection("face verification", metric="accuracy",
                           columns=(ReportColumn(("accuracy",), "acc"),),
                           rule="10-fold accuracy, threshold chosen on 9 folds (insightface); TAR@FAR at_most")
    order = 30

    def units(self, settings: Switch, target: str) -> list[UnitPlan]:
        """One unit per pair set."""
        return [UnitPlan(self.name, Needs(), label="verification")]

    def run(self, unit: UnitPlan, inputs: PairInputs, settings: Switch) -> UnitOutput:
        """Score the pairs whose images are all readable; ``n`` counts the images of the pairs scored."""
        from overspec.protocols.verification import evaluate_verification, flip_sum_embeddings

        x = inputs.x
        joint = flip_sum_embeddings(x[:, 0], x[:, 1])
        require_finite(inputs.benchmark, "pair similarities", np.einsum("ij,ij->i", joint[0::2], joint[1::2]))
        result = evaluate_verification(x[:, 0], x[:, 1], inputs.issame)
        n, skipped, split = len(x), inputs.n_skipped, inputs.split
        extra = {"convention": "insightface 10-fold, threshold on 9 folds, flip-sum embeddings"}
        tar = result["tar_at_far"]
        return UnitOutput([_row(split, "accuracy", result["accuracy"], n, skipped, extra),
                           _row(split, "accuracy_std", result["accuracy_std"], n, skipped, extra),
                           _row(split, "tar_at_far_1e-3", tar["tar"], n, skipped,
                                {**extra, "rule": tar["rule"], "reachable": bool(tar["reachable"])})])


class IJBProtocol(Protocol):
    """IJB 1:1 TAR at FAR 1e-6..1e-1 (insightface rule; at-most rule alongside) and 1:N TPIR@FPIR and rank-1."""

    name = "ijb"
    targets = ("ijb",)
    settings_type = Switch
    report = ReportSection("IJB", metric="tar_at_far_0.0001",
                           columns=(ReportColumn(("tar_at_far_0.0001",), "TAR@FAR=1e-4"),),
                           rule="TAR@FAR nearest (insightface), at_most alongside; 1:N TPIR@FPIR open set")
    order = 40

    def units(self, settings: Switch, target: str) -> list[UnitPlan]:
        """One unit per IJB meta folder."""
        return [UnitPlan(self.name, Needs(), label="IJB")]

    def run(self, unit: UnitPlan, inputs: IJBInputs, settings: Switch) -> UnitOutput:
        """Templates of readable faces only (an emptied template drops its pairs); ``n`` counts the faces used."""
        from overspec.protocols.ijb import evaluate_ijb

        meta, split = inputs.meta, inputs.split
        result = evaluate_ijb(meta, inputs.x, inputs.rows)
        n, skipped = meta.num_faces, inputs.n_skipped
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
        return UnitOutput(rows)


_MAD_COLUMNS = (ReportColumn(("d_eer",), "D-EER", False),) + tuple(
    ReportColumn((f"apcer@bpcer{p}_nearest", f"apcer@bpcer{p}"), f"APCER@BPCER{p}%", False) for p in (1, 10, 20)
) + tuple(ReportColumn((f"bpcer@apcer{p}_nearest", f"bpcer@apcer{p}"), f"BPCER@APCER{p}%", False) for p in (1, 10, 20))
_PAD_COLUMNS = (ReportColumn(("hter_test_eer",), "HTER", False), ReportColumn(("auc",), "AUC"))
_MAD_SET_GROUPS = (ReportGroup("D-EER", _MAD_COLUMNS[:1], False),
                   ReportGroup("APCER@BPCER 1/10/20", _MAD_COLUMNS[1:4], False),
                   ReportGroup("BPCER@APCER 1/10/20", _MAD_COLUMNS[4:], False))


class AttackDetection(Protocol):
    """MAD or PAD metrics of one scoring method per unit (``<kind>/<scoring>``); samples skipped as unreadable are
    left out of every split and ``n`` counts the test samples scored."""

    name = "attack"
    targets = ("pad", "mad")
    settings_type = AttackSettings
    report = ReportSection("attack detection", metric="d_eer",
                           rule="D-EER argmin (SMDD); APCER/BPCER operating points at_most, nearest (MADation) and "
                                "bob (bob.measure); PAD HTER at the dev (else test) EER threshold")
    order = 50

    def columns(self, kind: str) -> tuple[ReportColumn, ...]:
        """The biometric-table columns of a MAD or PAD benchmark."""
        return _MAD_COLUMNS if kind == "mad" else _PAD_COLUMNS

    def set_groups(self, kind: str) -> tuple[ReportGroup, ...]:
        """MAD per morphing method as Table C reports it: D-EER, APCER@BPCER and BPCER@APCER at 1 / 10 / 20 %."""
        return _MAD_SET_GROUPS if kind == "mad" else ()

    def headline(self, unit_name: str) -> tuple[str, str, bool] | None:
        """The kind's first column, labelled with the unit's scoring ("D-EER own head")."""
        metric, label, higher = super().headline(unit_name)
        return metric, f"{label} {SCORING_LABELS[unit_name.partition('/')[2]]}", higher

    def units(self, settings: AttackSettings, target: str) -> list[UnitPlan]:
        """One unit per configured scoring; own-head scoring needs a head, zero-shot the text tower, the probe the
        protocol's train split. Its operating points and rules are keyed in, so stored units predating them are
        recomputed."""
        needs = {"own_head": Needs(head=True), "probe": Needs(train_split=True), "zero_shot": Needs(text_tower=True)}
        labels = {"own_head": "own-head attack scoring", "probe": "probe attack scoring",
                  "zero_shot": "zero-shot attack scoring"}
        keyed = {"operating_points": list(ad.OPERATING_POINTS), "rules": list(ad.RULE_SUFFIXES)}
        return [UnitPlan(f"{target}/{s}", needs[s], keyed, labels[s]) for s in settings.scoring]

    def owns(self, unit_name: str) -> bool:
        """``mad/<scoring>`` and ``pad/<scoring>``."""
        kind, _, scoring = unit_name.partition("/")
        return kind in self.targets and scoring in ad.SCORING_METHODS

    def unit_order(self, name: str) -> tuple:
        """PAD before MAD, then the scoring preference (own head, probe, zero-shot)."""
        kind, _, scoring = name.partition("/")
        return (self.order, self.targets.index(kind), ad.SCORING_METHODS.index(scoring))

    def run(self, unit: UnitPlan, inputs: AttackInputs, settings: AttackSettings) -> UnitOutput:
        """Score every non-train split, then compute the kind's metrics on test (dev fixes PAD thresholds)."""
        scoring = unit.name.split("/", 1)[1]
        score = _scorer(inputs, scoring)
        scored = {role: ad.AttackScores.of(part.split.subset(part.index),
                                           _finite(inputs.benchmark, role, scoring, score(part.x)))
                  for role, part in inputs.splits.items() if role != "train"}
        result = ad.evaluate_scores(inputs.benchmark, inputs.kind, scoring, scored["test"], scored.get("dev"))
        n, test = len(scored["test"].scores), inputs.splits["test"].split
        rows = []
        for row in result.rows():
            extra = {"scoring": row["scoring"], "level": row["level"], "convention": row["convention"],
                     "reachable": bool(row["reachable"]), "n_bona_fide": row["n_bona_fide"],
                     "n_attack": row["n_attack"], **row["details"]}
            rows.append(_row(test, row["metric"], row["value"], n, inputs.n_skipped, extra))
        return UnitOutput(rows)


def _scorer(inputs: AttackInputs, scoring: str) -> Callable[[np.ndarray], np.ndarray]:
    """The function from features to attack scores (higher = bona fide) of one scoring method."""
    if scoring == "own_head":
        return inputs.head.scores
    if scoring == "probe":
        train = inputs.splits["train"]
        return functools.partial(ad.probe_scores, train.x, train.labels, seed=inputs.seed)
    return functools.partial(ad.zero_shot_scores, classifier=torch.from_numpy(inputs.classifier))


def _finite(benchmark: str, role: str, scoring: str, scores: np.ndarray) -> np.ndarray:
    """``scores`` unchanged, after checking that none is NaN or infinite (the error names benchmark and split)."""
    require_finite(benchmark, f"{scoring} attack scores of its {role!r} split", scores)
    return scores


VERIFICATION = Verification()
IJB = IJBProtocol()
ATTACK = AttackDetection()
