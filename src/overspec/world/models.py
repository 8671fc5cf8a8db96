"""The world's models behind the ``world:NAME`` weights scheme: tiny CLIPs pretrained in a cache folder of their own.

They train on a seed-0 world generated inside ``<cache_dir>/world-models`` (their own copy), never on the data a
run evaluates, so resolving a model neither depends on nor touches a run's world, whatever its seed.
"""

from __future__ import annotations

from pathlib import Path

from overspec.world.pretrain import TINY_CLIPS, ensure_tiny_clips

__all__ = ["MODELS_FOLDER", "folder_of"]

MODELS_FOLDER = "world-models"


def folder_of(name: str, cache_dir: Path) -> Path:
    """Return the open_clip ``local-dir`` folder of world model ``name``, pretraining it on first use."""
    if name not in TINY_CLIPS:
        raise LookupError(f"unknown world model {name!r}; known: {sorted(TINY_CLIPS)}")
    return ensure_tiny_clips(Path(cache_dir) / MODELS_FOLDER)[name]
