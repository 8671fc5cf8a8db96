"""Biometric benchmarks: one YAML entry each (kind, on-disk format, location), opened into what protocols need.

Kinds are registered in :data:`BENCHMARK_KINDS`, each with its formats and an opener returning a typed opened
benchmark: ``verification`` (insightface ``.bin`` pair files or a pairs CSV) → :class:`OpenedVerification`,
``ijb`` (insightface IJB meta folder) → :class:`OpenedIJB`, ``mad`` and ``pad`` (protocol-list CSVs; ``ocim``
builds a PAD leave-one-out protocol from per-source lists) → :class:`OpenedAttack`. Code exists per format;
adding a benchmark is one YAML file in ``data/biometric/catalog/``, or, for a user's own files, one YAML file
named in a run config's ``benchmark_files`` (:func:`register_benchmark_file`; its ``root`` is absolute or relative
to that YAML file's folder).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from overspec.config.typed import from_dict, load_yaml
from overspec.data.base import DatasetLayoutError, LabelledImages
from overspec.data.biometric.attack_list import SPLITS
from overspec.registry import Registry, RegistryError
from overspec.errors import InputError

__all__ = ["BiometricBenchmark", "BenchmarkKind", "BENCHMARK_KINDS", "TASK_KINDS", "OpenedAttack", "OpenedIJB",
           "OpenedVerification", "biometric_registry", "open_benchmark", "open_verification", "open_ijb",
           "open_attack", "benchmark_status", "read_benchmark_file", "register_benchmark_file"]

CATALOG_DIR = Path(__file__).parent / "catalog"
#: The benchmark kinds that measure each specialisation: a fine-tune's own task, as the report and sweeps read it.
TASK_KINDS = {"fr": ("verification", "ijb"), "mad": ("mad",), "pad": ("pad",)}
#: ``ocim`` options choosing which splits of the per-source lists form the protocol's train and test splits.
SPLIT_OPTIONS = ("train_splits", "test_splits")


@dataclass(frozen=True)
class BiometricBenchmark:
    """A biometric benchmark; ``root`` (file or folder) is under the data root or absolute; ``origin``: its YAML."""

    name: str
    kind: str
    format: str
    root: str
    layout: str
    description: str = ""
    study: bool = False
    options: Mapping[str, Any] = field(default_factory=dict)
    origin: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if self.kind not in BENCHMARK_KINDS:
            raise InputError(f"kind must be one of {BENCHMARK_KINDS.names()}, got {self.kind!r}")
        formats = BENCHMARK_KINDS.get(self.kind).formats
        if self.format not in formats:
            raise InputError(f"format of a {self.kind} benchmark must be one of {formats}, got {self.format!r}")
        if self.format == "ocim" and not {"target", "sources"} <= set(self.options):
            raise InputError("an ocim benchmark needs options 'target' and 'sources' (source name -> protocol CSV)")
        for key in (k for k in SPLIT_OPTIONS if k in self.options):
            if self.format != "ocim":
                raise InputError(f"options.{key} applies to ocim benchmarks only, not to format {self.format!r}")
            if not _is_split_list(self.options[key]):
                raise InputError(f"options.{key} must be a non-empty list drawn from {list(SPLITS)}, "
                                 f"got {self.options[key]!r}")

    def path(self, data_root: Path) -> Path:
        """Where the benchmark's files are under ``data_root`` (``root`` itself when absolute)."""
        return Path(data_root) / self.root


def _is_split_list(value: object) -> bool:
    """Whether ``value`` is a non-empty list of protocol split names."""
    return isinstance(value, (list, tuple)) and bool(value) and all(v in SPLITS for v in value)


def _read_entry(path: Path) -> BiometricBenchmark:
    """Read one catalog YAML file into an entry that remembers the file."""
    data = load_yaml(path)
    return from_dict(BiometricBenchmark, {**data, "origin": str(path)} if isinstance(data, dict) else data,
                     where=str(path))


@functools.cache
def biometric_registry() -> Registry[BiometricBenchmark]:
    """Return the registry of shipped biometric benchmarks, read once from ``catalog/*.yaml``."""
    registry: Registry[BiometricBenchmark] = Registry("biometric benchmark")
    for path in sorted(CATALOG_DIR.glob("*.yaml")):
        entry = _read_entry(path)
        registry.register(entry.name, entry)
    return registry


def read_benchmark_file(path: str | Path) -> BiometricBenchmark:
    """Read a user's catalog entry, its relative ``root`` taken from the entry file's folder (so it runs anywhere)."""
    path = Path(path).expanduser().resolve()
    entry = _read_entry(path)
    root = Path(entry.root).expanduser()
    return replace(entry, root=str(root if root.is_absolute() else (path.parent / root).resolve()))


def register_benchmark_file(path: str | Path) -> BiometricBenchmark:
    """Register a user's catalog entry: the same entry again is a no-op, another under a taken name an error."""
    entry = read_benchmark_file(path)
    registry = biometric_registry()
    if entry.name not in registry:
        return registry.register(entry.name, entry)
    known = registry.get(entry.name)
    if known != entry:
        raise RegistryError(f"{entry.origin}: biometric benchmark {entry.name!r} is already registered from "
                            f"{known.origin or 'code (no file)'} with different settings; rename one of them")
    return known


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


def _home(entry: BiometricBenchmark, data_root: Path) -> Path:
    """The folder a benchmark's listed files must stay in: the data root, or for a user's entry whose files lie
    elsewhere, the folder of its own files."""
    path, root = entry.path(data_root).resolve(), Path(data_root).resolve()
    if path.is_relative_to(root):
        return root
    return path if path.is_dir() else path.parent


def open_attack(entry: BiometricBenchmark, data_root: Path):
    """Return the :class:`~overspec.data.biometric.attack_list.AttackProtocol` (OCIM protocols built on the fly)."""
    from overspec.data.biometric.attack_list import leave_one_out, read_protocol

    if entry.format == "attack_csv":
        path = entry.path(data_root)
        if not path.is_file():
            raise _missing(entry, path)
        return read_protocol(path, name=entry.name, task=entry.kind, within=_home(entry, data_root)).require_scorable()
    sources = {}
    for source, rel in entry.options["sources"].items():
        path = entry.path(data_root) / rel
        if not path.is_file():
            raise _missing(entry, path)
        sources[source] = read_protocol(path, name=f"{entry.name}:{source}", task="pad",
                                        within=_home(entry, data_root))
    splits = {key: tuple(entry.options[key]) for key in SPLIT_OPTIONS if key in entry.options}
    return leave_one_out(sources, entry.options["target"], **splits).require_scorable()


@dataclass(frozen=True)
class OpenedVerification:
    """A verification benchmark opened: its images in pair order (2k, 2k+1), whether each pair is genuine, and the
    file it was read from (``source``, named by errors of its units)."""

    name: str
    pairs: LabelledImages
    issame: np.ndarray
    source: Path | None = None

    def splits(self) -> dict[str, LabelledImages]:
        """The image splits its units embed, by role."""
        return {"pairs": self.pairs}


@dataclass(frozen=True)
class OpenedIJB:
    """An IJB benchmark opened: its aligned face images, the parsed meta folder (templates, pairs, 1:N lists) and
    that folder (``source``)."""

    name: str
    faces: LabelledImages
    meta: Any
    source: Path | None = None

    def splits(self) -> dict[str, LabelledImages]:
        """The image splits its units embed, by role."""
        return {"faces": self.faces}


@dataclass(frozen=True)
class OpenedAttack:
    """A MAD or PAD benchmark opened: its kind, its protocol's splits (train, dev, test) by name, and its protocol
    CSV (or, for an OCIM protocol, the folder of its source lists) as ``source``."""

    name: str
    kind: str
    by_role: Mapping[str, LabelledImages]
    source: Path | None = None

    def splits(self) -> dict[str, LabelledImages]:
        """The image splits its units embed, by role."""
        return dict(self.by_role)


Opened = OpenedVerification | OpenedIJB | OpenedAttack


@dataclass(frozen=True)
class BenchmarkKind:
    """A kind of biometric benchmark: the on-disk formats it accepts and the opener of one of its entries."""

    name: str
    formats: tuple[str, ...]
    opener: Callable[[BiometricBenchmark, Path], Opened]


def _opened_verification(entry: BiometricBenchmark, data_root: Path) -> OpenedVerification:
    pairs = open_verification(entry, data_root)
    return OpenedVerification(entry.name, pairs.images_as_dataset(entry.name), pairs.issame, entry.path(data_root))


def _opened_ijb(entry: BiometricBenchmark, data_root: Path) -> OpenedIJB:
    meta = open_ijb(entry, data_root)
    return OpenedIJB(entry.name, meta.faces_dataset(entry.name), meta, entry.path(data_root))


def _opened_attack(entry: BiometricBenchmark, data_root: Path) -> OpenedAttack:
    protocol = open_attack(entry, data_root)
    return OpenedAttack(entry.name, entry.kind, {name: protocol.split(name) for name in protocol.splits()},
                        entry.path(data_root))


BENCHMARK_KINDS: Registry[BenchmarkKind] = Registry("biometric benchmark kind")
for _kind in (BenchmarkKind("verification", ("bin", "pairs_csv"), _opened_verification),
              BenchmarkKind("ijb", ("ijb",), _opened_ijb),
              BenchmarkKind("mad", ("attack_csv",), _opened_attack),
              BenchmarkKind("pad", ("attack_csv", "ocim"), _opened_attack)):
    BENCHMARK_KINDS.register(_kind.name, _kind)


def open_benchmark(entry: BiometricBenchmark, data_root: Path) -> Opened:
    """Open ``entry``'s files under ``data_root`` with its kind's opener."""
    return BENCHMARK_KINDS.get(entry.kind).opener(entry, Path(data_root))
