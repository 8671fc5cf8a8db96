"""``<root>/<split>/<class>/<image>`` folders (torchvision ``ImageFolder`` semantics, read without torchvision).

Class order is the sorted union of the class folder names over every split folder in ``root``, so a split that
lacks a class keeps the same label numbering as the others. Datasets with no split folders (RESISC45) put all
classes under ``<root>/<options.folder>`` and declare ``options.carve_split``. Class names sort as *strings*;
numeric folder names (ImageNet-V2) need the ``imagenetv2`` format instead.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from overspec.data.base import LabelledImages
from overspec.data.digests import lazy_files_digest
from overspec.data.formats import SplitRequest
from overspec.data.formats._common import (
    carve_options,
    carved_split,
    check_options,
    layout_error,
    list_images,
    open_rgb,
    relative_names,
    require_dir,
)

__all__ = ["load_split"]

_OPTIONS = ("folder", "carve_split")


def load_split(request: SplitRequest) -> LabelledImages:
    """Read one split of an image-folder dataset (or carve it from the single folder)."""
    check_options(request, _OPTIONS)
    root = require_dir(request, request.root)
    carve = carve_options(request)
    if carve is not None:
        base = require_dir(request, root / str(request.options.get("folder", ".")))
        classes = _class_folders(base)
    else:
        base = require_dir(request, root / request.split)
        classes = sorted({name for split_dir in _subfolders(root) for name in _class_folders(split_dir)})
    if not classes:
        raise layout_error(request, base, "no class folders inside")
    whole = _read_folder(request, root, base, classes)
    return carved_split(request, whole, carve) if carve is not None else whole


def _subfolders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir())


def _class_folders(folder: Path) -> list[str]:
    return [p.name for p in _subfolders(folder)]


def _read_folder(request: SplitRequest, root: Path, base: Path, classes: list[str]) -> LabelledImages:
    """Return the images of ``base/<class>/`` labelled by the index of ``<class>`` in ``classes``."""
    paths: list[Path] = []
    labels: list[int] = []
    for label, name in enumerate(classes):
        folder = base / name
        if folder.is_dir():
            images = list_images(folder)
            paths.extend(images)
            labels.extend([label] * len(images))
    if not paths:
        raise layout_error(request, base, "no images in the class folders")
    names = relative_names(paths, root)
    return LabelledImages(
        dataset=request.dataset,
        split=request.split,
        labels=np.asarray(labels, dtype=np.int64),
        read=lambda i: open_rgb(paths[i]),
        identity=tuple(names),
        classnames=tuple(classes),
        info={"native_classes": tuple(classes), "root": str(root)},
        locate=lambda i: str(paths[i]),
        content=lazy_files_digest(paths),
    )
