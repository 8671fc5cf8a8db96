"""The dataset catalog: one YAML entry per dataset, validated once, resolved to LabelledImages on demand.

Entries live under ``overspec/data/catalog/`` (sub-folders allowed) and are registered in :data:`DATASETS` the
first time :func:`dataset_registry` (or any lookup) runs; users add their own with :func:`load_catalog_file` or
:func:`register_dataset`. Class names and templates are shipped text files (``data/classnames/<name>.txt``,
``data/templates/<name>.txt``, ``#`` lines are comments) or come from the data itself (``file`` / ``loader``).
Schema: the project's catalog schema; dataset facts: general-eval.md §1-§3.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from overspec.config.typed import parse_yaml
from overspec.data.base import DatasetLayoutError, LabelledImages
from overspec.data.formats import FORMATS, SplitRequest
from overspec.data.formats.common import read_lines
from overspec.registry import Registry, nearest_names
from overspec.errors import InputError

__all__ = [
    "DATASETS",
    "DatasetEntry",
    "CatalogError",
    "ROLES",
    "TASKS",
    "MAIN_METRICS",
    "FROM_DATA",
    "dataset_registry",
    "get_dataset",
    "dataset_names",
    "register_dataset",
    "register_user_dataset",
    "load_catalog_file",
    "parse_entry",
    "load_dataset",
    "open_dataset",
    "OpenedDataset",
    "dataset_status",
    "has_role",
    "shipped_classnames",
    "shipped_templates",
]

logger = logging.getLogger(__name__)

_PACKAGE_DIR = Path(__file__).resolve().parent
CATALOG_DIR = _PACKAGE_DIR / "catalog"
CLASSNAMES_DIR = _PACKAGE_DIR / "classnames"
TEMPLATES_DIR = _PACKAGE_DIR / "templates"

#: Split roles: ``all`` is every image of a dataset without an official split (what CLIP_benchmark scores SUN397's
#: zero-shot on), beside the train / val / test parts carved from it.
ROLES = ("train", "val", "test", "all")
TASKS = ("zero_shot", "linear_probe")
MAIN_METRICS = ("acc1", "mean_per_class_recall")
#: ``classnames`` / ``templates`` values that take the lists from the dataset's own files instead of a shipped one.
FROM_DATA = ("file", "loader")


class CatalogError(InputError):
    """A catalog entry is invalid; the message names the file and the key at fault."""


@dataclass(frozen=True)
class DatasetEntry:
    """One catalog entry: where a dataset lives, how to read it, and how to prompt for it.

    ``expected_count`` maps a role to its documented number of images (ImageNet-V2: ``{test: 10000}``); a folder
    holding another number (a partial download, an extra sub-folder) is refused instead of silently scored.
    """

    name: str
    format: str
    root: str
    splits: Mapping[str, str]
    classnames: str
    templates: str
    layout: str
    main_metric: str = "acc1"
    tasks: tuple[str, ...] = TASKS
    options: Mapping[str, Any] = field(default_factory=dict)
    source: str = ""
    study: bool = False
    num_classes: int | None = None
    classnames_variant: str = ""
    expected_count: Mapping[str, int] = field(default_factory=dict)
    origin: str = field(default="", compare=False)


_YAML_KEYS = tuple(f.name for f in dataclasses.fields(DatasetEntry) if f.name != "origin")
_REQUIRED = ("name", "format", "root", "splits", "classnames", "templates", "layout")

DATASETS: Registry[DatasetEntry] = Registry("dataset")
_catalog_loaded = False


def dataset_registry() -> Registry[DatasetEntry]:
    """Return :data:`DATASETS`, reading the shipped catalog YAMLs on the first call."""
    global _catalog_loaded
    if not _catalog_loaded:
        entries = [_read_entry(path) for path in sorted(CATALOG_DIR.rglob("*.yaml"))]
        _catalog_loaded = True
        for entry in entries:
            DATASETS.register(entry.name, entry)
        logger.debug("dataset catalog: %d entries from %s", len(entries), CATALOG_DIR)
    return DATASETS


def get_dataset(name: str) -> DatasetEntry:
    """Return the catalog entry called ``name`` (unknown names suggest the nearest ones)."""
    return dataset_registry().get(name)


def dataset_names(*, study: bool | None = None, task: str | None = None) -> list[str]:
    """Return the sorted catalog names, optionally only the study's (``study=True``) or those offering ``task``."""
    registry = dataset_registry()
    entries = [registry.get(name) for name in registry.names()]
    return [e.name for e in entries
            if (study is None or e.study == study) and (task is None or task in e.tasks)]


def register_dataset(entry: DatasetEntry, *, overwrite: bool = False) -> DatasetEntry:
    """Add a user's entry to the catalog (after the shipped ones, so a name clash is reported)."""
    dataset_registry().register(entry.name, entry, overwrite=overwrite)
    return entry


def load_catalog_file(path: str | Path, *, overwrite: bool = False) -> DatasetEntry:
    """Read, validate and register one catalog YAML file of the user's; return its entry."""
    return register_dataset(_read_entry(Path(path)), overwrite=overwrite)


def _read_entry(path: Path) -> DatasetEntry:
    try:
        raw = parse_yaml(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise CatalogError(f"{path}: cannot read catalog entry ({exc})") from exc
    return parse_entry(raw, origin=str(path))


def parse_entry(raw: object, origin: str = "<entry>") -> DatasetEntry:
    """Validate a mapping read from a catalog YAML and return the entry; errors name ``origin`` and the key."""
    if not isinstance(raw, Mapping):
        raise CatalogError(f"{origin}: a catalog entry must be a mapping of keys, got {type(raw).__name__}")
    for key in raw:
        if key not in _YAML_KEYS:
            close = nearest_names(str(key), _YAML_KEYS)
            hint = f"; did you mean {close[0]!r}?" if close else f"; valid keys: {', '.join(_YAML_KEYS)}"
            raise CatalogError(f"{origin}: unknown key {key!r}{hint}")
    missing = [key for key in _REQUIRED if key not in raw]
    if missing:
        raise CatalogError(f"{origin}: missing required key(s) {', '.join(missing)}")
    values = dict(raw)
    if not isinstance(values.get("tasks", TASKS), (list, tuple)):
        raise CatalogError(f"{origin}: key 'tasks': must be a list drawn from {', '.join(TASKS)}")
    values["tasks"] = tuple(values.get("tasks", TASKS))
    values["splits"] = dict(values["splits"]) if isinstance(values["splits"], Mapping) else values["splits"]
    values["options"] = dict(values.get("options") or {})
    counts = values.get("expected_count") or {}
    values["expected_count"] = dict(counts) if isinstance(counts, Mapping) else counts
    entry = DatasetEntry(**values, origin=origin)
    _validate(entry, origin)
    return entry


def _validate(entry: DatasetEntry, origin: str) -> None:
    """Check every field of ``entry``; raise :class:`CatalogError` naming the first bad key."""
    def bad(key: str, message: str) -> CatalogError:
        return CatalogError(f"{origin}: key {key!r}: {message}")

    for key in ("name", "format", "root", "classnames", "templates", "layout"):
        if not isinstance(getattr(entry, key), str) or not getattr(entry, key).strip():
            raise bad(key, "must be a non-empty string")
    if entry.format not in FORMATS:
        raise bad("format", FORMATS.unknown_message(entry.format))
    if not isinstance(entry.splits, Mapping) or not entry.splits:
        raise bad("splits", f"must map roles ({', '.join(ROLES)}) to native split names")
    for role, native in entry.splits.items():
        if role not in ROLES:
            raise bad("splits", f"unknown role {role!r}; roles are {', '.join(ROLES)}")
        if not isinstance(native, str) or not native:
            raise bad("splits", f"role {role!r} must name a native split (a string)")
    if entry.main_metric not in MAIN_METRICS:
        raise bad("main_metric", f"{entry.main_metric!r} is not one of {', '.join(MAIN_METRICS)}")
    unknown_tasks = [t for t in entry.tasks if t not in TASKS]
    if unknown_tasks or not entry.tasks:
        raise bad("tasks", f"must be a non-empty list drawn from {', '.join(TASKS)}, got {list(entry.tasks)}")
    if "linear_probe" in entry.tasks and "train" not in entry.splits:
        raise bad("tasks", "linear_probe needs a train split in 'splits'")
    if entry.classnames not in FROM_DATA and not _shipped_path(CLASSNAMES_DIR, entry.classnames).is_file():
        raise bad("classnames", f"no shipped list {entry.classnames!r} in {CLASSNAMES_DIR} (or use file / loader)")
    if entry.classnames_variant and not _shipped_path(CLASSNAMES_DIR, entry.classnames_variant).is_file():
        raise bad("classnames_variant", f"no shipped list {entry.classnames_variant!r} in {CLASSNAMES_DIR}")
    if entry.templates != "file" and not _shipped_path(TEMPLATES_DIR, entry.templates).is_file():
        raise bad("templates", f"no shipped list {entry.templates!r} in {TEMPLATES_DIR} (or use file)")
    if not isinstance(entry.study, bool):
        raise bad("study", "must be true or false")
    if entry.num_classes is not None and (not isinstance(entry.num_classes, int) or entry.num_classes < 1):
        raise bad("num_classes", "must be a positive integer")
    if not isinstance(entry.source, str):
        raise bad("source", "must be a string")
    if not isinstance(entry.expected_count, Mapping):
        raise bad("expected_count", "must map roles to image counts, e.g. {test: 10000}")
    for role, count in entry.expected_count.items():
        if role not in entry.splits:
            raise bad("expected_count", f"role {role!r} is not one of the entry's splits ({', '.join(entry.splits)})")
        if not isinstance(count, int) or isinstance(count, bool) or count < 1:
            raise bad("expected_count", f"the count of {role!r} must be a positive integer, got {count!r}")


def _shipped_path(folder: Path, name: str) -> Path:
    return folder / f"{name}.txt"


def shipped_classnames(name: str) -> list[str]:
    """Return the shipped class-name list ``data/classnames/<name>.txt`` (comment lines skipped)."""
    return read_lines(_shipped_path(CLASSNAMES_DIR, name))


def shipped_templates(name: str) -> list[str]:
    """Return the shipped prompt templates ``data/templates/<name>.txt`` (placeholder ``{c}``)."""
    return read_lines(_shipped_path(TEMPLATES_DIR, name))


def has_role(entry: DatasetEntry, role: str) -> bool:
    """Whether ``entry`` defines the split ``role`` (train / val / test)."""
    return role in entry.splits


def dataset_status(entry: DatasetEntry, data_root: str | Path) -> tuple[bool, str]:
    """Return whether ``entry``'s folder exists under ``data_root`` (non-empty) and a short reason to show."""
    root = Path(data_root) / entry.root
    if not root.is_dir():
        return False, f"missing: {root} (expected {entry.layout})"
    if not any(root.iterdir()):
        return False, f"empty folder: {root} (expected {entry.layout})"
    return True, f"found at {root}"


@dataclass(frozen=True)
class OpenedDataset:
    """A catalog dataset opened: its splits by role (those of train / val / test it has)."""

    name: str
    by_role: Mapping[str, LabelledImages]

    def splits(self) -> dict[str, LabelledImages]:
        """The splits by role."""
        return dict(self.by_role)


def open_dataset(name: str, data_root: str | Path) -> OpenedDataset:
    """Load every split a catalog dataset has (raises like :func:`load_dataset` for the first one that fails)."""
    entry = get_dataset(name)
    return OpenedDataset(name, {role: load_dataset(entry, role, data_root) for role in ROLES if has_role(entry, role)})


def load_dataset(name_or_entry: str | DatasetEntry, role: str, data_root: str | Path, *,
                 classnames: str | None = None) -> LabelledImages:
    """Load split ``role`` (train / val / test) of a catalog dataset stored under ``data_root``.

    ``classnames`` picks another shipped list (e.g. the entry's ``classnames_variant``) instead of the entry's own.
    Raises :class:`DatasetLayoutError` when the files are missing or malformed, ``ValueError`` for a role the
    dataset lacks or class names that do not fit its labels.
    """
    entry = name_or_entry if isinstance(name_or_entry, DatasetEntry) else get_dataset(name_or_entry)
    if role not in ROLES:
        raise InputError(f"unknown split role {role!r}; roles are {', '.join(ROLES)}")
    if not has_role(entry, role):
        raise InputError(f"dataset {entry.name!r} has no {role} split (it has: {', '.join(entry.splits)})")
    request = SplitRequest(entry.name, Path(data_root) / entry.root, entry.splits[role], entry.layout,
                           entry.options)
    loaded = FORMATS.get(entry.format)(request)
    _check_expected_count(entry, role, request, loaded)
    names = _resolve_classnames(entry, request, loaded, classnames)
    templates = _resolve_templates(entry, request, loaded)
    _check_class_count(entry, loaded, names)
    info = {**loaded.info, "native_split": request.split, "format": entry.format}
    return dataclasses.replace(loaded, split=role, classnames=tuple(names), templates=tuple(templates), info=info)


def _resolve_classnames(entry: DatasetEntry, request: SplitRequest, loaded: LabelledImages,
                        override: str | None) -> list[str]:
    choice = override or entry.classnames
    if choice in FROM_DATA:
        if not loaded.classnames:
            raise DatasetLayoutError(entry.name, request.root, entry.layout,
                                     f"no class names found in the data (classnames: {choice})")
        return list(loaded.classnames)
    if not _shipped_path(CLASSNAMES_DIR, choice).is_file():
        raise InputError(f"dataset {entry.name!r}: no shipped class-name list {choice!r} in {CLASSNAMES_DIR}")
    return shipped_classnames(choice)


def _resolve_templates(entry: DatasetEntry, request: SplitRequest, loaded: LabelledImages) -> list[str]:
    if entry.templates == "file":
        if not loaded.templates:
            raise DatasetLayoutError(entry.name, request.root, entry.layout,
                                     "no templates found in the data (templates: file)")
        return list(loaded.templates)
    return shipped_templates(entry.templates)


def _check_expected_count(entry: DatasetEntry, role: str, request: SplitRequest, loaded: LabelledImages) -> None:
    """Refuse a split whose image count differs from the catalog's documented one, naming the folder."""
    expected = entry.expected_count.get(role)
    if expected is None or len(loaded) == expected:
        return
    folder = request.root / str(entry.options["folder"]) if "folder" in entry.options else request.root
    raise DatasetLayoutError(entry.name, folder, entry.layout,
                             f"{role} split has {len(loaded):,} images, the catalog expects {expected:,}")


def _check_class_count(entry: DatasetEntry, loaded: LabelledImages, names: list[str]) -> None:
    """Fail when the class names cannot describe the labels (a wrong list silently misnames classes)."""
    where = f"dataset {entry.name!r}"
    if entry.num_classes is not None and len(names) != entry.num_classes:
        raise InputError(f"{where}: {len(names)} class names but num_classes is {entry.num_classes}")
    native = loaded.info.get("native_classes")
    if native and len(native) != len(names):
        raise InputError(f"{where}: the data has {len(native)} classes but the class-name list has {len(names)}")
    if len(loaded) and int(loaded.labels.max()) >= len(names):
        raise InputError(f"{where}: label {int(loaded.labels.max())} found but only {len(names)} class names")
    if len(loaded) and int(loaded.labels.min()) < 0:
        raise InputError(f"{where}: negative labels found (unlabelled samples?)")


def register_user_dataset(path: Path) -> DatasetEntry:
    """Register a user's catalog YAML and return its entry; registering the same entry again (a second run) is a
    no-op, a different entry under a taken name is refused by :func:`register_dataset`."""
    from overspec.config.typed import load_yaml

    entry = parse_entry(load_yaml(path), origin=str(path))
    registry = dataset_registry()
    if entry.name not in registry or registry.get(entry.name) != entry:
        register_dataset(entry)
    return entry
