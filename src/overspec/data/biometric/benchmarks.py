"""Biometric benchmarks: one YAML entry each (kind, on-disk format, location), opened into what protocols need.

Kinds: ``verification`` (insightface ``.bin`` pair files or a pairs CSV), ``ijb`` (insightface IJB meta folder),
``mad`` and ``pad`` (protocol-list CSVs; ``ocim`` builds a PAD leave-one-out protocol from per-source lists).
Code exists per format; adding a benchmark is one YAML file in ``data/biometric/catalog/``.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from overspec.config.typed import from_dict, load_yaml
from overspec.data.base import DatasetLayoutError
from overspec.registry import Registry

__all__ = ["BiometricBenchmark", "biometric_registry", "open_verification", "open_ijb", "open_attack",
           "benchmark_status", "KINDS"]

CATALOG_DIR = Path(__file__).parent / "catalog"
KINDS = {"verification": ("bin", "pairs_csv"), "ijb": ("ijb",), "mad": ("attack_csv",),
         "pad": ("attack_csv", "ocim")}


@dataclass(frozen=True)
class BiometricBenchmark:
    """A biometric benchmark: ``root`` is relative to the data root (a file for ``bin``, else a folder or CSV)."""

    name: str
    kind: str
    format: str
    root: str
    layout: str
    description: str = ""
    study: bool = False
    options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {sorted(KINDS)}, got {self.kind!r}")
        if self.format not in KINDS[self.kind]:
            raise ValueError(f"format of a {self.kind} benchmark must be one of {KINDS[self.kind]}, got {self.format!r}")
        if self.format == "ocim" and not {"target", "sources"} <= set(self.options):
            raise ValueError("an ocim benchmark needs options 'target' and 'sources' (source name -> protocol CSV)")

    def path(self, data_root: Path) -> Path:
        """Where the benchmark's files are under ``data_root``."""
        return Path(data_root) / self.root


@functools.cache
def biometric_registry() -> Registry[BiometricBenchmark]:
    """Return the registry of shipped biometric benchmarks, read once from ``catalog/*.yaml``."""
    registry: Registry[BiometricBenchmark] = Registry("biometric benchmark")
    for path in sorted(CATALOG_DIR.glob("*.yaml")):
        entry = from_dict(BiometricBenchmark, load_yaml(path), where=str(path))
        registry.register(entry.name, entry)
    return registry


def _missing(entry: BiometricBenchmark, path: Path, problem: str = "not found") -> DatasetLayoutError:
    return DatasetLayoutError(entry.name, path, entry.layout, problem)


def benchmark_status(entry: BiometricBenchmark, data_root: Path) -> tuple[bool, str]:
    """Return whether the benchmark's files are present under ``data_root`` and a short reason."""
    paths = [entry.path(data_root)]
    if entry.format == "ocim":
        paths = [entry.path(data_root) / rel for rel in entry.options["sources"].values()]
    absent = [p for p in paths if not p.exists()]
    if absent:
        return False, f"missing: {absent[0]} (expected {entry.layout})"
    return True, f"found at {paths[0]}"


def open_verification(entry: BiometricBenchmark, data_root: Path):
    """Return the :class:`~overspec.data.formats.bin_pairs.BinPairs` of a verification benchmark."""
    from overspec.data.formats.bin_pairs import read_bin, read_pairs_csv

    path = entry.path(data_root)
    if not path.is_file():
        raise _missing(entry, path)
    if entry.format == "bin":
        return read_bin(path, name=entry.name)
    return read_pairs_csv(path, entry.options.get("image_root"), name=entry.name)


def open_ijb(entry: BiometricBenchmark, data_root: Path):
    """Return the parsed IJB meta folder (:class:`~overspec.data.formats.ijb.IJBMeta`)."""
    from overspec.data.formats.ijb import read_ijb_meta

    path = entry.path(data_root)
    if not path.is_dir():
        raise _missing(entry, path)
    return read_ijb_meta(path, entry.options.get("prefix"))


def open_attack(entry: BiometricBenchmark, data_root: Path):
    """Return the :class:`~overspec.data.biometric.attack_list.AttackProtocol` (OCIM protocols built on the fly)."""
    from overspec.data.biometric.attack_list import leave_one_out, read_protocol

    if entry.format == "attack_csv":
        path = entry.path(data_root)
        if not path.is_file():
            raise _missing(entry, path)
        return read_protocol(path, name=entry.name, task=entry.kind, within=data_root).require_scorable()
    sources = {}
    for source, rel in entry.options["sources"].items():
        path = entry.path(data_root) / rel
        if not path.is_file():
            raise _missing(entry, path)
        sources[source] = read_protocol(path, name=f"{entry.name}:{source}", task="pad", within=data_root)
    return leave_one_out(sources, entry.options["target"]).require_scorable()
