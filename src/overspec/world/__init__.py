"""The embedded synthetic world: small labelled datasets, a caption corpus and two tiny CLIPs trained on it.

``ensure_world(root)`` writes the datasets (csv format) under ``<root>/world``; ``ensure_tiny_clips(cache_dir)``
returns open_clip ``local-dir:`` folders of ``tiny-s`` and ``tiny-m``, pretraining them on first use. The
pretraining names are imported lazily so that generating the world does not import torch's training stack.
"""

from __future__ import annotations

import importlib

from overspec.world.general import WORLD_DATASETS, WorldDataset, caption_corpus, ensure_world, world_hash

__all__ = [
    "TINY_CLIPS",
    "WORLD_DATASETS",
    "WorldDataset",
    "caption_corpus",
    "ensure_tiny_clips",
    "ensure_world",
    "pretrain_tiny_clip",
    "register_tiny_configs",
    "tiny_clip_config",
    "world_hash",
]

_PRETRAIN_NAMES = {"TINY_CLIPS", "ensure_tiny_clips", "pretrain_tiny_clip", "register_tiny_configs",
                   "tiny_clip_config"}


def __getattr__(name: str) -> object:
    if name in _PRETRAIN_NAMES:
        return getattr(importlib.import_module("overspec.world.pretrain"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
