"""WebDataset tar shards, read with the standard ``tarfile`` module: the one reader for the catalog and fine-tuning.

Catalog layout, CLIP_benchmark ``wds/<name>`` folders (general-eval.md §6.2)::

    <root>/classnames.txt                          one class name per line, in label order
    <root>/zeroshot_classification_templates.txt   one template per line, placeholder {c}
    <root>/dataset_type.txt                        optional; "retrieval" / "multilabel" are not supported here
    <root>/<split>/nshards.txt                     number of shards N
    <root>/<split>/0.tar ... <N-1>.tar             samples: <key>.{webp,png,jpg,jpeg} + <key>.cls (integer label)

Fine-tuning (:func:`read_shards`) takes one ``.tar`` or a folder of ``*.tar`` of the same samples.

Samples follow webdataset's rule: a member's key is its name up to the first dot of its base name (directories
included) and its field is the rest, so ``a/b.c.jpg`` is field ``c.jpg`` of sample ``a/b``. A sample needs an
image field (one of the image suffixes, e.g. ``jpg``) and a ``cls`` field; samples keep their tar order. The shards
are indexed once (member offsets and labels); items are then read by seeking to the image bytes, so random access
needs no re-scan and no ``webdataset`` dependency.
"""

from __future__ import annotations

import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from overspec.data.base import LabelledImages
from overspec.data.digests import lazy_files_digest
from overspec.data.formats import SplitRequest
from overspec.data.formats.common import (
    check_options,
    is_image_suffix,
    layout_error,
    read_lines,
    require_dir,
    require_file,
)
from overspec.data.images import open_rgb

__all__ = ["load_split", "read_shards", "split_key", "CLASSNAMES_FILE", "TEMPLATES_FILE", "SHARDS_LAYOUT"]

CLASSNAMES_FILE = "classnames.txt"
TEMPLATES_FILE = "zeroshot_classification_templates.txt"
#: What :func:`read_shards` expects, quoted in its layout errors.
SHARDS_LAYOUT = "tar shards of <key>.jpg|png|webp + <key>.cls"


@dataclass(frozen=True)
class _Member:
    shard: int
    offset: int
    size: int


def load_split(request: SplitRequest) -> LabelledImages:
    """Index the tar shards of ``<root>/<split>`` and return their samples as LabelledImages."""
    check_options(request, ())
    root = require_dir(request, request.root)
    _require_classification(request, root)
    split_dir = require_dir(request, root / request.split)
    shards = _shard_paths(request, split_dir)
    keys, members, labels = _index_shards(request, shards)
    classnames = tuple(_optional_lines(root / CLASSNAMES_FILE))
    info = {"shards": len(shards), **({"native_classes": classnames} if classnames else {})}
    return LabelledImages(
        dataset=request.dataset,
        split=request.split,
        labels=np.asarray(labels, dtype=np.int64),
        read=lambda i: _read_image(shards, members[i]),
        identity=(tuple((p.name, p.stat().st_size) for p in shards), tuple(keys)),
        classnames=classnames,
        templates=tuple(_optional_lines(root / TEMPLATES_FILE)),
        info=info,
        locate=lambda i: str(split_dir / keys[i]),
        content=lazy_files_digest(shards),
    )


def _optional_lines(path: Path) -> list[str]:
    return read_lines(path, comments=False) if path.is_file() else []


def _require_classification(request: SplitRequest, root: Path) -> None:
    kind_file = root / "dataset_type.txt"
    if kind_file.is_file():
        kind = kind_file.read_text(encoding="utf-8").strip()
        if kind and kind != "classification":
            raise layout_error(request, kind_file, f"dataset type {kind!r} is not single-label classification")


def _shard_paths(request: SplitRequest, split_dir: Path) -> list[Path]:
    """Return ``0.tar ... N-1.tar`` as counted by ``nshards.txt`` (all must exist)."""
    count_file = require_file(request, split_dir / "nshards.txt")
    text = count_file.read_text(encoding="utf-8").strip()
    if not text.isdigit() or int(text) < 1:
        raise layout_error(request, count_file, f"expected a positive shard count, found {text!r}")
    return [require_file(request, split_dir / f"{i}.tar") for i in range(int(text))]


def _index_shards(request: SplitRequest, shards: list[Path]) -> tuple[list[str], list[_Member], list[int]]:
    """Return the sample keys (``<shard>/<key>``), image locations and labels of every shard, in shard order."""
    keys: list[str] = []
    members: list[_Member] = []
    labels: list[int] = []
    for number, shard in enumerate(shards):
        fields, images, classes = _index_shard(request, number, shard)
        for key, names in fields.items():
            if key not in images or key not in classes:
                missing = "image" if key not in images else ".cls label"
                raise layout_error(request, shard, f"sample {key!r} has no {missing} (fields: {', '.join(names)}; "
                                                   "a key ends at the first dot of the file name)")
            keys.append(f"{shard.name}/{key}")
            members.append(images[key])
            labels.append(classes[key])
    if not keys:
        raise layout_error(request, shards[0].parent, "the shards hold no samples")
    return keys, members, labels


def _index_shard(request: SplitRequest, number: int,
                 shard: Path) -> tuple[dict[str, list[str]], dict[str, _Member], dict[str, int]]:
    """Return every sample's fields (tar order), image locations and labels of shard ``number``."""
    fields: dict[str, list[str]] = {}
    images: dict[str, _Member] = {}
    classes: dict[str, int] = {}
    try:
        with tarfile.open(shard, mode="r:") as tar:
            for info in tar:
                if not info.isfile():
                    continue
                key, field = split_key(info.name)
                fields.setdefault(key, []).append(field)
                if is_image_suffix(f".{field}"):
                    images[key] = _Member(number, info.offset_data, info.size)
                elif field == "cls":
                    classes[key] = _read_label(request, shard, tar, info)
    except tarfile.TarError as exc:
        raise layout_error(request, shard, f"not a readable tar file ({exc})") from exc
    return fields, images, classes


def split_key(name: str) -> tuple[str, str]:
    """Split a tar member name into (sample key, field) at the first dot of its base name (webdataset's rule)."""
    folder, _, base = name.rpartition("/")
    stem, _, field = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), field


def _read_label(request: SplitRequest, shard: Path, tar: tarfile.TarFile, info: tarfile.TarInfo) -> int:
    handle = tar.extractfile(info)
    text = handle.read().decode("utf-8", errors="replace").strip() if handle is not None else ""
    if not text.lstrip("-").isdigit():
        raise layout_error(request, shard, f"member {info.name!r} should hold an integer label, found {text!r}")
    return int(text)


def _read_image(shards: list[Path], member: _Member) -> Image.Image:
    with open(shards[member.shard], "rb") as handle:
        handle.seek(member.offset)
        return open_rgb(handle.read(member.size))


def read_shards(path: str | Path, name: str | None = None) -> LabelledImages:
    """Read one ``.tar`` or a folder of ``*.tar`` (sorted by name) as one ``train`` split (fine-tuning's input)."""
    path = Path(path)
    request = SplitRequest(name or path.stem, path, "train", SHARDS_LAYOUT)
    shards = sorted(path.glob("*.tar")) if path.is_dir() else [path]
    if not shards:
        raise layout_error(request, path, "no .tar shards there")
    shards = [require_file(request, shard) for shard in shards]
    keys, members, labels = _index_shards(request, shards)
    return LabelledImages(
        dataset=request.dataset,
        split=request.split,
        labels=np.asarray(labels, dtype=np.int64),
        read=lambda i: _read_image(shards, members[i]),
        identity=("wds", tuple((s.name, s.stat().st_size) for s in shards)),
        info={"format": "wds", "shards": len(shards)},
        locate=lambda i: str(shards[0].parent / keys[i]),
    )
