"""``<root>/<split>/<class>/<image>`` folders (torchvision ``ImageFolder`` semantics, read without torchvision).

Class order is the sorted union of the class folder names over every split folder in ``root``, so a split that
lacks a class keeps the same label numbering as the others. Datasets with no split folders (RESISC45) put all
classes under ``<root>/<options.folder>`` and declare ``options.carve_split``. Class names sort as *strings*;
numeric folder names (ImageNet-V2) need the ``imagenetv2`` format instead.

:func:`class_folders` reads one folder of class folders with no split folders as a single ``train`` split: the
identity folders of face-recognition fine-tuning (CASIA-WebFace, ``<root>/<identity>/<image>``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from overspec.data.base import LabelledImages
from overspec.data.digests import lazy_files_digest
from overspec.data.formats import SplitRequest
from overspec.data.images import open_rgb
from overspec.data.formats.common import (
    carve_options,
    carved_split,
    check_options,
    layout_error,
    list_images,
    relative_names,
    require_dir,
)

__all__ = ["load_split", "class_folders", "CLASS_FOLDERS_LAYOUT"]

_OPTIONS = ("folder", "carve_split")

#: What :func:`class_folders` expects, quoted in its layout errors.
CLASS_FOLDERS_LAYOUT = "<root>/<identity>/*.jpg|png (one folder per identity)"


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


def _class_images(base: Path, classes: Sequence[str]) -> tuple[list[Path], list[int]]:
    """The images of ``base/<class>/`` (sorted by name) labelled by the index of ``<class>`` in ``classes``."""
    paths: list[Path] = []
    labels: list[int] = []
    for label, name in enumerate(classes):
        folder = base / name
        if folder.is_dir():
            images = list_images(folder)
            paths.extend(images)
            labels.extend([label] * len(images))
    return paths, labels


def _read_folder(request: SplitRequest, root: Path, base: Path, classes: list[str]) -> LabelledImages:
    """Return the images of ``base/<class>/`` labelled by the index of ``<class>`` in ``classes``."""
    paths, labels = _class_images(base, classes)
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


def class_folders(root: str | Path, name: str | None = None) -> LabelledImages:
    """Read ``<root>/<class>/<image>`` as one ``train`` split; class ``k`` of the sorted folder names gets label ``k``.

    The identity is tagged ``identity-folders`` (the fine-tuning layout it serves), so fine-tune run hashes that
    include its fingerprint stay the same.
    """
    root = Path(root)
    request = SplitRequest(name or root.name, root, "train", CLASS_FOLDERS_LAYOUT)
    require_dir(request, root)
    classes = _class_folders(root)
    paths, labels = _class_images(root, classes)
    if not paths:
        raise layout_error(request, root, "no identity folders with images")
    return LabelledImages(
        dataset=request.dataset,
        split=request.split,
        labels=np.asarray(labels, dtype=np.int64),
        read=lambda i: open_rgb(paths[i]),
        identity=("identity-folders", tuple(relative_names(paths, root))),
        classnames=tuple(classes),
        info={"format": "identity-folders", "root": str(root)},
        locate=lambda i: str(paths[i]),
    )
