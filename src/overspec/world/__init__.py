"""The embedded synthetic world, a producer beside :mod:`overspec.finetune`: datasets it generates and tiny CLIPs
it pretrains on them.

The rest of overspec sees the world through its catalog entries (``data/catalog/world/``,
``data/biometric/catalog/world-*.yaml``), through the ``world:NAME`` weights scheme that
:mod:`overspec.models.sources.files` resolves lazily with :func:`overspec.world.models.folder_of`, and through:

- :func:`prepare` ``(root, seed)``: generate the world of ``seed`` (general and biometric) and return its data
  root, ``root`` for seed 0 and ``root/seed-<N>`` otherwise (:func:`seed_root`), so worlds of different seeds
  never share a folder;
- :func:`training_sets` ``(task, data_root)``: the biometric world's fine-tuning sets of a task;
- :func:`checked_once`: one run's content checks of generated files, each hashed once.

Names are imported on first use, so that importing the package (as the runner does for :func:`checked_once`)
loads no generator, and generating the world does not import torch's training stack.
"""

from __future__ import annotations

import importlib

from overspec.world.checks import checked_once

__all__ = [
    "TINY_CLIPS",
    "WORLD_DATASETS",
    "TrainingSets",
    "WorldDataset",
    "biometric_root",
    "caption_corpus",
    "checked_once",
    "default_root",
    "ensure_tiny_clips",
    "ensure_world",
    "prepare",
    "pretrain_tiny_clip",
    "register_tiny_configs",
    "seed_root",
    "tiny_clip_config",
    "training_sets",
    "world_hash",
]

_LAZY = {
    **{name: "overspec.world.general" for name in ("WORLD_DATASETS", "WorldDataset", "caption_corpus", "ensure_world",
                                                    "world_hash")},
    **{name: "overspec.world.layout" for name in ("biometric_root", "default_root", "prepare", "seed_root")},
    **{name: "overspec.world.pretrain" for name in ("TINY_CLIPS", "ensure_tiny_clips", "pretrain_tiny_clip",
                                                     "register_tiny_configs", "tiny_clip_config")},
    **{name: "overspec.world.training" for name in ("TrainingSets", "training_sets")},
}


def __getattr__(name: str) -> object:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
