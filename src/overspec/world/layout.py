"""Where the world of each seed lives under a root, and :func:`prepare`, which generates it there.

A data root holds ``world/<dataset>/`` (the general datasets, the catalog's ``world/...`` roots) and
``world/biometric/`` (the biometric benchmarks). Seed 0 uses the root itself, as earlier versions did, so existing
caches stay valid; every other seed has its own data root ``<root>/seed-<N>``. A world of one seed is therefore
never regenerated in place by a run of another seed while something reads it.
"""

from __future__ import annotations

from pathlib import Path

from overspec.world.biometric import ensure_biometric_world
from overspec.world.general import ensure_world

__all__ = ["DATA_FOLDER", "biometric_root", "default_root", "prepare", "seed_root"]

DATA_FOLDER = "world-data"
BIOMETRIC = "biometric"


def default_root(cache_dir: Path) -> Path:
    """Return the root the default run generates its worlds under, ``<cache_dir>/world-data``."""
    return Path(cache_dir) / DATA_FOLDER


def seed_root(root: Path, seed: int = 0) -> Path:
    """Return the data root of the world of ``seed`` under ``root`` (``root`` for seed 0, else ``root/seed-<N>``)."""
    return Path(root) if seed == 0 else Path(root) / f"seed-{seed}"


def biometric_root(data_root: Path) -> Path:
    """Return the biometric world's folder under a data root :func:`prepare` returned."""
    return Path(data_root) / "world" / BIOMETRIC


def prepare(root: Path, seed: int = 0) -> Path:
    """Generate the general and biometric world of ``seed`` under ``root`` unless complete; return its data root.

    Dataset catalog roots (``world/<name>``) are relative to the returned folder, :func:`seed_root` of ``root``.
    """
    data_root = seed_root(root, seed)
    ensure_biometric_world(ensure_world(data_root, seed) / BIOMETRIC, seed)
    return data_root
