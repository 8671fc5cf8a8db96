"""Helpers shared by the format loaders: layout errors, the one image-suffix list, image listing and decoding,
text lists and carved splits."""

from __future__ import annotations

import dataclasses

import math
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from overspec.data.base import DatasetLayoutError, LabelledImages
from overspec.data.formats import SplitRequest
from overspec.registry import nearest_names
from overspec.errors import InputError

__all__ = [
    "IMAGE_EXTENSIONS",
    "is_image_suffix",
    "layout_error",
    "require_dir",
    "require_file",
    "list_images",
    "relative_names",
    "files_identity",
    "read_lines",
    "carve_indices",
    "carve_options",
    "carved_split",
    "check_options",
]

#: File suffixes read as images, by every format and reader (compared lower-case).
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp"})

_CARVE_KEYS = ("test_fraction", "val_fraction", "seed", "source")


def layout_error(request: SplitRequest, path: Path | str, problem: str) -> DatasetLayoutError:
    """Return the error for a missing or malformed ``path`` of ``request``'s dataset."""
    return DatasetLayoutError(request.dataset, path, request.layout, problem)


def require_dir(request: SplitRequest, path: Path) -> Path:
    """Return ``path`` if it is a directory, else raise :class:`DatasetLayoutError`."""
    if not path.is_dir():
        raise layout_error(request, path, "folder not found" if not path.exists() else "not a folder")
    return path


def require_file(request: SplitRequest, path: Path) -> Path:
    """Return ``path`` if it is a file, else raise :class:`DatasetLayoutError`."""
    if not path.is_file():
        raise layout_error(request, path, "file not found")
    return path


def check_options(request: SplitRequest, allowed: Iterable[str]) -> None:
    """Reject option keys a format does not know, suggesting the nearest known one."""
    allowed = tuple(allowed)
    for key in request.options:
        if key not in allowed:
            close = nearest_names(key, allowed)
            hint = f"; did you mean {close[0]!r}?" if close else f"; known options: {', '.join(allowed)}"
            raise InputError(f"dataset {request.dataset!r}: unknown option {key!r}{hint}")


def is_image_suffix(suffix: str) -> bool:
    """True when a file suffix (``".JPG"``; a webdataset extension is given its dot) names an image."""
    return suffix.lower() in IMAGE_EXTENSIONS


def list_images(folder: Path) -> list[Path]:
    """Return the image files directly inside ``folder``, sorted by name."""
    return sorted(p for p in folder.iterdir() if is_image_suffix(p.suffix) and p.is_file())


def relative_names(paths: Iterable[Path | str], root: Path) -> list[str]:
    """Return ``paths`` as POSIX paths relative to ``root`` (machine-independent sample identities)."""
    return [Path(os.path.relpath(p, root)).as_posix() for p in paths]


def files_identity(root: Path) -> tuple[tuple[str, int], ...]:
    """Return ``(relative name, size)`` of every file under ``root``: a cheap identity for array-backed sets."""
    found = []
    for folder, _, files in os.walk(root):
        for name in files:
            path = Path(folder) / name
            found.append((path.relative_to(root).as_posix(), path.stat().st_size))
    return tuple(sorted(found))


def read_lines(path: Path, *, comments: bool = True) -> list[str]:
    """Return the lines of a text list (class names, templates), skipping ``#`` lines when ``comments``.

    Trailing whitespace and trailing empty lines are dropped; inner spacing is kept as written.
    """
    lines = [line.rstrip() for line in path.read_text(encoding="utf-8").splitlines()]
    if comments:
        lines = [line for line in lines if not line.startswith("#")]
    while lines and not lines[-1]:
        lines.pop()
    return lines


def carve_options(request: SplitRequest) -> Mapping[str, Any] | None:
    """Return the validated ``carve_split`` option of ``request`` (``None`` when the dataset has real splits)."""
    carve = request.options.get("carve_split")
    if carve is None:
        return None
    where = f"dataset {request.dataset!r}: option carve_split"
    if not isinstance(carve, Mapping):
        raise InputError(f"{where} must be a mapping with keys {', '.join(_CARVE_KEYS)}")
    for key in carve:
        if key not in _CARVE_KEYS:
            close = nearest_names(key, _CARVE_KEYS)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise InputError(f"{where}: unknown key {key!r}{hint}")
    test, val = carve.get("test_fraction"), carve.get("val_fraction", 0.0)
    if not isinstance(test, (int, float)) or not 0 < test < 1:
        raise InputError(f"{where}.test_fraction must be a number in (0, 1), got {test!r}")
    if not isinstance(val, (int, float)) or not 0 <= val < 1 or test + val >= 1:
        raise InputError(f"{where}.val_fraction must be >= 0 with test_fraction + val_fraction < 1, got {val!r}")
    if not isinstance(carve.get("seed", 0), int):
        raise InputError(f"{where}.seed must be an integer, got {carve.get('seed')!r}")
    return carve


def carve_indices(labels: np.ndarray, test_fraction: float, val_fraction: float = 0.0,
                  seed: int = 0) -> dict[str, np.ndarray]:
    """Split sample indices into train / val / test, stratified by label, deterministic for a given ``seed``.

    Within each class (in label order) the indices are shuffled by one seeded generator and the first
    ``round(test_fraction * n)`` go to test, the next ``round(val_fraction * n)`` to val, the rest to train;
    a class with at least two samples always keeps one for training. Each part is returned sorted.
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    parts: dict[str, list[np.ndarray]] = {"train": [], "val": [], "test": []}
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        members = members[rng.permutation(members.size)]
        n = members.size
        n_test = math.floor(test_fraction * n + 0.5)
        n_val = math.floor(val_fraction * n + 0.5)
        if n > 1:
            n_test = min(n_test, n - 1)
            n_val = min(n_val, n - 1 - n_test)
        else:
            n_test = n_val = 0
        parts["test"].append(members[:n_test])
        parts["val"].append(members[n_test:n_test + n_val])
        parts["train"].append(members[n_test + n_val:])
    return {name: np.sort(np.concatenate(chunks)) if chunks else np.zeros(0, np.int64)
            for name, chunks in parts.items()}


def carved_split(request: SplitRequest, whole: LabelledImages, carve: Mapping[str, Any]) -> LabelledImages:
    """Return the ``request.split`` part (train / val / test) of ``whole`` carved as ``carve`` says (``all``: every
    image, uncarved)."""
    if request.split == "all":
        return dataclasses.replace(whole, split="all", info={**whole.info, "carve_split": dict(carve)})
    val_fraction = float(carve.get("val_fraction", 0.0))
    names = ("train", "val", "test") if val_fraction > 0 else ("train", "test")
    if request.split not in names:
        raise InputError(
            f"dataset {request.dataset!r}: split {request.split!r} does not exist in its carved split "
            f"(available: {', '.join(names)})"
        )
    parts = carve_indices(whole.labels, float(carve["test_fraction"]), val_fraction, int(carve.get("seed", 0)))
    carved = whole.subset(parts[request.split], split=request.split)
    carved.info["carve_split"] = dict(carve)
    return carved
