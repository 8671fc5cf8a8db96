"""The biometric world's fine-tuning sets: which of its files train and validate each task.

FR trains on the identity folders (people disjoint from every evaluation set) and validates on the LFW-style
pairs; MAD trains on the train split of the MAD list, whose dev split the caller holds out; PAD trains on sources
O, C and I (their train and dev splits) and tests on target M.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from overspec.data.base import LabelledImages
from overspec.data.biometric.attack_list import leave_one_out, read_protocol
from overspec.data.formats.imagefolder import class_folders
from overspec.world.biometric import read_manifest
from overspec.world.layout import biometric_root
from overspec.errors import InputError

__all__ = ["PAD_SOURCES", "PAD_TARGET", "TrainingSets", "training_sets"]

PAD_SOURCES = ("O", "C", "I")
PAD_TARGET = "M"


@dataclass(frozen=True)
class TrainingSets:
    """One task's fine-tuning data: train images, and validation pairs (FR) or held-out splits (MAD, PAD).

    ``dev`` is None when the world has no dev split for the task (MAD), so the caller carves one from ``train``.
    """

    train: LabelledImages
    pairs: Path | None = None
    dev: LabelledImages | None = None
    test: LabelledImages | None = None


def training_sets(task: str, data_root: Path) -> TrainingSets:
    """Return the fine-tuning sets of ``task`` (fr, mad or pad) in the world prepared under ``data_root``."""
    root = biometric_root(data_root)
    manifest = read_manifest(root)
    if task == "fr":
        return TrainingSets(class_folders(root / "fr_train", name="world-fr-train"),
                            pairs=Path(manifest["verification"]["lfw"]))
    if task == "mad":
        protocol = read_protocol(manifest["mad"]["protocol"], name="world-mad", task="mad")
        return TrainingSets(protocol.split("train"), test=protocol.split("test"))
    if task != "pad":
        raise InputError(f"the world has no training data for task {task!r}; expected fr, mad or pad")
    sources = {k: read_protocol(root / "pad" / k / "protocol.csv", name=f"world-pad-{k}", task="pad")
               for k in (*PAD_SOURCES, PAD_TARGET)}
    protocol = leave_one_out(sources, PAD_TARGET, sources=PAD_SOURCES)
    return TrainingSets(protocol.split("train"), dev=protocol.split("dev"), test=protocol.split("test"))
