"""ImageNet-V2: ``<root>/<folder>/<k>/*.jpeg`` where the folder name ``k`` *is* the ImageNet-1k label.

Labels come from ``int(folder name)``; a string sort (``0, 1, 10, 100, ...``) as ``ImageFolder`` would do
scrambles them, which is the trap this format exists to avoid. The default folder is the matched-frequency
variant, ``ImageNetV2-matched-frequency`` (CLIP_benchmark's name; the tarball extracts as
``imagenetv2-matched-frequency-format-val``, set ``options.folder`` for it). Only a test split exists.
Reference: general-eval.md §2 (loader of CLIP_benchmark / WiSE-FT).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from overspec.data.base import LabelledImages
from overspec.data.digests import lazy_files_digest
from overspec.data.formats import SplitRequest
from overspec.data.images import open_rgb
from overspec.data.formats.common import (
    check_options,
    layout_error,
    list_images,
    relative_names,
    require_dir,
)
from overspec.errors import InputError

__all__ = ["load_split", "DEFAULT_FOLDER"]

DEFAULT_FOLDER = "ImageNetV2-matched-frequency"
_OPTIONS = ("folder",)


def load_split(request: SplitRequest) -> LabelledImages:
    """Read the ImageNet-V2 test images with labels taken from their numeric folder names."""
    check_options(request, _OPTIONS)
    if request.split != "test":
        raise InputError(f"dataset {request.dataset!r}: ImageNet-V2 has only a 'test' split, not {request.split!r}")
    root = require_dir(request, request.root)
    base = require_dir(request, root / str(request.options.get("folder", DEFAULT_FOLDER)))
    numbered = _numbered_folders(request, base)
    paths: list[Path] = []
    labels: list[int] = []
    for label, folder in numbered:
        images = list_images(folder)
        paths.extend(images)
        labels.extend([label] * len(images))
    if not paths:
        raise layout_error(request, base, "no images in the numbered folders")
    return LabelledImages(
        dataset=request.dataset,
        split=request.split,
        labels=np.asarray(labels, dtype=np.int64),
        read=lambda i: open_rgb(paths[i]),
        identity=tuple(relative_names(paths, root)),
        info={"folder": base.name},
        locate=lambda i: str(paths[i]),
        content=lazy_files_digest(paths),
    )


def _numbered_folders(request: SplitRequest, base: Path) -> list[tuple[int, Path]]:
    """Return ``(label, folder)`` for every sub-folder of ``base``, in numeric order."""
    numbered = []
    for folder in base.iterdir():
        if not folder.is_dir():
            continue
        if not folder.name.isdigit():
            raise layout_error(request, folder, "class folders must be named by their integer label (0 ... 999)")
        numbered.append((int(folder.name), folder))
    if not numbered:
        raise layout_error(request, base, "no numbered class folders inside")
    return sorted(numbered)
