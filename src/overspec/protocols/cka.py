"""Where fine-tuning changed the model: linear CKA between a fine-tune and its base, visual block by visual block.

Linear centred kernel alignment (Kornblith, Norouzi, Lee and Hinton, "Similarity of Neural Network Representations
Revisited", ICML 2019) of two representations ``X`` (n × p) and ``Y`` (n × q) of the same n images, centred per
column, is ``||Yᵀ X||²_F / (||Xᵀ X||_F ||Yᵀ Y||_F)``: 1 for representations equal up to rotation and isotropic
scaling, lower the more the fine-tune moved the block. It is computed on the class token each block outputs, on up
to ``max_images`` images of the scored split drawn with the run's seed (the same images for both models).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from overspec.errors import InputError
from overspec.protocols.base import (GENERAL, Needs, Protocol, ReportColumn, ReportSection, UnitOutput, UnitPlan,
                                     settings_dict)
from overspec.protocols.inputs import BlockInputs

__all__ = ["CKA", "CKASettings", "block_metric", "linear_cka"]

ESTIMATOR = "linear-cka-v1"


def linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Return linear CKA between two representations of the same rows (float64; 1.0 when both are constant)."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0]:
        raise InputError(f"CKA needs two (n, features) arrays of the same n, got {x.shape} and {y.shape}")
    x = x - x.mean(axis=0)
    y = y - y.mean(axis=0)
    cross = np.linalg.norm(y.T @ x) ** 2
    scale = np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y)
    return 1.0 if scale == 0 else float(cross / scale)


def block_metric(block: int) -> str:
    """The record metric of one block's CKA (blocks counted from 0, the one nearest the patches)."""
    return f"cka[{block}]"


@dataclass(frozen=True)
class CKASettings:
    """Block-wise CKA between each fine-tune and its base on every target of the kinds named, each on at most
    ``max_images`` images of its scored split (test split, face pairs, IJB faces)."""

    enabled: bool = True
    max_images: int = 256
    kinds: tuple[str, ...] = (GENERAL, "verification", "ijb", "mad", "pad")

    def __post_init__(self) -> None:
        if self.max_images < 2:
            raise InputError(f"max_images must be at least 2 (CKA compares rows), got {self.max_images}")


class CKA(Protocol):
    """Linear CKA per visual block between a fine-tune and its base, on general datasets and biometric benchmarks."""

    name = "cka"
    targets = (GENERAL, "verification", "ijb", "mad", "pad")
    settings_type = CKASettings
    report = ReportSection("where it happens: linear CKA per block", metric="cka_mean", accuracy=False,
                           columns=(ReportColumn(("cka_mean",), "mean CKA with the base"),),
                           rule="linear CKA (Kornblith et al. 2019) of each visual block's class token, fine-tune "
                                "against base, on the same images")
    order = 80

    def units(self, settings: CKASettings, target: str) -> list[UnitPlan]:
        """One unit per target of the kinds the settings name."""
        if target not in settings.kinds:
            return []
        needs = Needs(base=True, inputs="blocks", sample=settings.max_images)
        return [UnitPlan(self.name, needs, {"estimator": ESTIMATOR, **settings_dict(settings, ("max_images",))},
                         "block-wise CKA")]

    def in_findings(self, unit_name: str) -> bool:
        """CKA values are similarities, never part of the accuracy tables or GELO."""
        return False

    def run(self, unit: UnitPlan, inputs: BlockInputs, settings: CKASettings) -> UnitOutput:
        """One record per block, then the mean over blocks and the lowest block's value."""
        if inputs.model.shape[1] != inputs.base.shape[1]:
            raise InputError(f"dataset {inputs.dataset!r}: the fine-tune has {inputs.model.shape[1]} visual blocks, "
                             f"its base {inputs.base.shape[1]}; CKA compares blocks one to one")
        values = [linear_cka(inputs.model[:, b], inputs.base[:, b]) for b in range(inputs.model.shape[1])]
        n = int(inputs.model.shape[0])
        common = {"split": inputs.split.split, "n": n, "split_fingerprint": inputs.split.fingerprint}
        extra = {"estimator": ESTIMATOR, "images": n, "skipped_images": inputs.n_skipped}
        rows = [{**common, "metric": block_metric(b), "value": v, "extra": {**extra, "block": b}}
                for b, v in enumerate(values)]
        lowest = int(np.argmin(values))
        rows.append({**common, "metric": "cka_mean", "value": float(np.mean(values)), "extra": extra})
        rows.append({**common, "metric": "cka_min", "value": values[lowest], "extra": {**extra, "block": lowest}})
        return UnitOutput(rows)


CKA_PROTOCOL = CKA()
