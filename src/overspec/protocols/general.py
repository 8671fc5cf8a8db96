"""The general-vision protocols of a study: zero-shot classification and the logistic-regression linear probe.

Each is one registered :class:`~overspec.protocols.base.Protocol`; their units run on
:class:`~overspec.protocols.inputs.ClassificationInputs` (features and labels), never on models.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import torch

from overspec.features.text import prompt_set_fingerprint
from overspec.protocols.base import GENERAL, Needs, Protocol, ReportSection, UnitOutput, UnitPlan, \
    settings_dict
from overspec.protocols.inputs import ClassificationInputs, SplitFeatures
from overspec.protocols._logistic_solver import SOLVER
from overspec.protocols._sampling import KSHOTS
from overspec.protocols.zero_shot import evaluate_zero_shot
from overspec.errors import InputError

__all__ = ["LINEAR_PROBE", "LinearProbeSettings", "METRICS", "ZERO_SHOT", "ZeroShotSettings"]

METRICS = ("acc1", "acc5", "mean_per_class_recall")


@dataclass(frozen=True)
class LinearProbeSettings:
    """Logistic-regression probe on frozen features (CLIP-paper protocol) and optional k-shot probes."""

    enabled: bool = True
    val_fraction: float = 0.2
    max_iter: int = 1000
    kshot: tuple[int, ...] = ()
    kshot_seeds: tuple[int, ...] = (0, 1, 2)

    def __post_init__(self) -> None:
        if not 0.0 < self.val_fraction < 1.0:
            raise InputError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        if self.max_iter < 1:
            raise InputError(f"max_iter must be >= 1, got {self.max_iter}")
        bad = [k for k in self.kshot if k not in KSHOTS]
        if bad:
            raise InputError(f"kshot values must be among {KSHOTS}, got {bad}")


@dataclass(frozen=True)
class ZeroShotSettings:
    """Zero-shot classification with each dataset's prompt ensemble; ``whole_set`` scores a dataset without an
    official split (one whose catalog entry has an ``all`` role, SUN397) on every image, as CLIP_benchmark does,
    instead of on the test part carved for the probe."""

    enabled: bool = True
    whole_set: bool = True


def _rows(result: dict, test: SplitFeatures, extra: dict) -> list[dict]:
    return [{"split": test.split.split, "metric": metric, "value": float(result[metric]), "n": len(test.index),
             "split_fingerprint": test.split.fingerprint, "extra": extra} for metric in METRICS]


def _predictions(result: dict, test: SplitFeatures) -> dict[str, np.ndarray]:
    """Per-sample outputs with the true labels and each sample's index in the split (skipped images are absent)."""
    return {"label": np.asarray(test.labels), "index": test.index,
            **{k: np.asarray(v) for k, v in result["predictions"].items()}}


class ZeroShot(Protocol):
    """Top-1, top-5 and mean per-class recall of the prompt-ensemble classifier on the test split."""

    name = "zero_shot"
    targets = (GENERAL,)
    settings_type = ZeroShotSettings
    report = ReportSection("zero-shot", gelo=True, rule="argmax over the prompt-ensemble classifier (CLIP_benchmark)")
    order = 10

    def units(self, settings: ZeroShotSettings, target: str) -> list[UnitPlan]:
        """One unit per dataset; it needs the text tower and the dataset's zero-shot task."""
        needs = Needs(text_tower=True, task="zero_shot", evaluate_on="all" if settings.whole_set else "test")
        return [UnitPlan(self.name, needs, settings_dict(settings), label="zero-shot")]

    def run(self, unit: UnitPlan, inputs: ClassificationInputs, settings: ZeroShotSettings) -> UnitOutput:
        """Score the test split with the dataset's class names and prompt ensemble."""
        test = inputs.test
        result = evaluate_zero_shot(test.x, test.labels, torch.from_numpy(inputs.classifier))
        names, templates = test.split.classnames, test.split.templates
        extra = {"prompt_set": prompt_set_fingerprint(names, templates), "n_templates": len(templates),
                 "n_classes": len(names), "features": "post-projection", "skipped_images": test.skipped}
        return UnitOutput(_rows(result, test, extra), _predictions(result, test))


_KSHOT_UNIT = re.compile(r"linear_probe_(\d+)shot")


class LinearProbe(Protocol):
    """The CLIP-paper probe (C searched on a validation split carved from train, refit, scored on test) and its
    k-shot variants (C by cross-validation inside the k-shot set, mean over seeds)."""

    name = "linear_probe"
    targets = (GENERAL,)
    settings_type = LinearProbeSettings
    report = ReportSection("linear probe", gelo=True,
                           rule="multinomial logistic regression, C on a log grid chosen on a validation split "
                                "carved from train, refit on train + val (CLIP paper)")
    order = 20

    def units(self, settings: LinearProbeSettings, target: str) -> list[UnitPlan]:
        """The full probe, then one unit per k; each keyed by the settings its numbers depend on."""
        needs = Needs(train_split=True, task="linear_probe")
        full = UnitPlan(self.name, needs, {"solver": SOLVER, **settings_dict(settings, ("val_fraction", "max_iter"))},
                        "linear probe")
        return [full] + [UnitPlan(f"{self.name}_{k}shot", needs, {"k": k, "solver": SOLVER, **settings_dict(
            settings, ("max_iter", "kshot_seeds"))}, "linear probe") for k in settings.kshot]

    def owns(self, unit_name: str) -> bool:
        """The full probe and its ``linear_probe_<k>shot`` units."""
        return unit_name == self.name or _KSHOT_UNIT.fullmatch(unit_name) is not None

    def unit_order(self, name: str) -> tuple:
        """The full probe first, then k-shot probes by k."""
        match = _KSHOT_UNIT.fullmatch(name)
        return (self.order, int(match.group(1)) if match else 0)

    def in_findings(self, unit_name: str) -> bool:
        """Only the full probe enters the study's GELO findings and figures."""
        return unit_name == self.name

    def run(self, unit: UnitPlan, inputs: ClassificationInputs, settings: LinearProbeSettings) -> UnitOutput:
        """Fit and score the full probe or, for a k-shot unit, the k-shot probes over the configured seeds."""
        if unit.name != self.name:
            return self._kshot(int(unit.settings["k"]), inputs, settings)
        from overspec.protocols.linear_probe import linear_probe  # with scikit-learn, only when a probe is fitted

        train, test = inputs.train, inputs.test
        result = linear_probe(train.x, train.labels, test.x, test.labels, seed=inputs.seed,
                              val_fraction=settings.val_fraction, max_iter=settings.max_iter, device=inputs.device)
        extra = {"C": result["C"], "val_acc1": result["val_acc1"], "n_train": result["n_train"],
                 "n_val": result["n_val"], "n_fits": result["n_fits"], "probe_split": result["split_fingerprint"],
                 "features": "post-projection", "skipped_images": train.skipped + test.skipped}
        return UnitOutput(_rows(result, test, extra), _predictions(result, test))

    @staticmethod
    def _kshot(k: int, inputs: ClassificationInputs, settings: LinearProbeSettings) -> UnitOutput:
        from overspec.protocols.linear_probe import kshot_probe

        train, test = inputs.train, inputs.test
        result = kshot_probe(train.x, train.labels, test.x, test.labels, k=k, seeds=settings.kshot_seeds,
                             max_iter=settings.max_iter, device=inputs.device)
        rows = []
        for metric in METRICS:
            extra = {"k": k, "seeds": list(settings.kshot_seeds), "std": result["std"][metric],
                     "per_seed": [float(run[metric]) for run in result["per_seed"]],
                     "C_per_seed": [float(run["C"]) for run in result["per_seed"]],
                     "skipped_images": train.skipped + test.skipped}
            rows.append({"split": test.split.split, "metric": metric, "value": result["mean"][metric],
                         "n": len(test.index), "split_fingerprint": test.split.fingerprint, "extra": extra})
        return UnitOutput(rows)


ZERO_SHOT = ZeroShot()
LINEAR_PROBE = LinearProbe()
