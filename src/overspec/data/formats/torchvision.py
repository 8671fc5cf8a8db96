"""Generic adapter over ``torchvision.datasets`` classes, always with ``download=False``.

The YAML names the class (``options.class``) and extra constructor keywords (``options.kwargs``, e.g.
``{annotation_level: variant}`` for FGVC-Aircraft, ``{partition: 1}`` for DTD). The native split is passed as
``split=`` when the class takes one (Country211 ``valid``, Pets ``trainval``, PCam ``val``), as ``train=`` for
CIFAR / MNIST style classes, and classes without splits (SUN397, EuroSAT, Caltech101) need
``options.carve_split``. Labels and sample lists are read from the dataset's attributes, never by decoding images;
path-backed datasets are re-ordered by relative path so the order does not depend on the file system
(torchvision's SUN397 uses ``rglob``). Reference: general-eval.md §2.

``options.verify_checksums: false`` skips torchvision's MD5 checks (CIFAR, STL10, Flowers102) so that re-packed
or test copies load; only file presence is checked, and CIFAR pickles are then read through the allow-listed
unpickler of :mod:`overspec.safeload` instead of plain ``pickle``.
"""

from __future__ import annotations

import inspect
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from types import FunctionType
from typing import Any, BinaryIO

import numpy as np

from overspec.data.base import LabelledImages
from overspec.data.digests import lazy_files_digest
from overspec.data.formats import SplitRequest
from overspec.data.images import to_rgb
from overspec.data.formats.common import (
    carve_options,
    carved_split,
    check_options,
    files_identity,
    layout_error,
    relative_names,
    require_dir,
)
from overspec.safeload import NUMPY_ARRAY_GLOBALS, SafeLoadError, restricted_loads
from overspec.errors import InputError

__all__ = ["load_split", "without_checksums"]

logger = logging.getLogger(__name__)

_OPTIONS = ("class", "kwargs", "verify_checksums", "carve_split")
_LABEL_ATTRS = ("targets", "_labels", "labels", "y")
_PATH_ATTRS = ("_image_files", "_images")
_PAIR_ATTRS = ("samples", "_samples")


def load_split(request: SplitRequest) -> LabelledImages:
    """Build the torchvision dataset named by ``request.options['class']`` and wrap it as LabelledImages."""
    check_options(request, _OPTIONS)
    root = require_dir(request, request.root)
    cls = _torchvision_class(request)
    if request.options.get("verify_checksums", True) is False:
        logger.warning("dataset %r: torchvision checksums are not verified (options.verify_checksums: false)",
                       request.dataset)
        cls = without_checksums(cls)
    carve = carve_options(request)
    kwargs = {**dict(request.options.get("kwargs") or {}), **_split_kwargs(request, cls, carve)}
    if "download" in inspect.signature(cls.__init__).parameters:
        kwargs["download"] = False
    dataset = _construct(request, cls, root, kwargs)
    whole = _wrap(request, dataset, root, kwargs)
    return carved_split(request, whole, carve) if carve is not None else whole


def _torchvision_class(request: SplitRequest) -> type:
    """Return the ``torchvision.datasets`` class named in the options."""
    import torchvision.datasets

    name = request.options.get("class")
    cls = getattr(torchvision.datasets, str(name), None)
    if not isinstance(cls, type):
        raise InputError(f"dataset {request.dataset!r}: options.class {name!r} is not a torchvision.datasets class")
    return cls


def _split_kwargs(request: SplitRequest, cls: type, carve: Mapping[str, Any] | None) -> dict[str, Any]:
    """Return how ``cls`` is told the split: ``split=``, ``train=`` or nothing (carved splits)."""
    params = inspect.signature(cls.__init__).parameters
    if carve is not None:
        return {"split": carve["source"]} if "source" in carve else {}
    if "split" in params:
        return {"split": request.split}
    if "train" in params:
        if request.split not in ("train", "test"):
            raise InputError(f"dataset {request.dataset!r}: torchvision {cls.__name__} has only the splits "
                             f"train and test, not {request.split!r}")
        return {"train": request.split == "train"}
    raise InputError(f"dataset {request.dataset!r}: torchvision {cls.__name__} has no split argument; "
                     "declare options.carve_split so train and test do not overlap")


def _construct(request: SplitRequest, cls: type, root: Path, kwargs: dict[str, Any]) -> Any:
    """Instantiate ``cls``; missing or corrupt files become :class:`DatasetLayoutError`."""
    try:
        return cls(str(root), **kwargs)
    except SafeLoadError as exc:
        raise layout_error(request, root, f"unreadable file ({exc})") from exc
    except (RuntimeError, OSError, KeyError, IndexError, EOFError) as exc:
        if "pip install" in str(exc):  # torchvision's wording for a missing optional dependency (scipy, h5py)
            raise ImportError(f"dataset {request.dataset!r}: {exc}") from exc
        problem = str(exc).split(". You can use download=True")[0] or type(exc).__name__
        raise layout_error(request, root, f"torchvision {cls.__name__}: {problem}") from exc


def _wrap(request: SplitRequest, dataset: Any, root: Path, kwargs: Mapping[str, Any]) -> LabelledImages:
    """Return ``dataset`` as LabelledImages with labels and identity read from its attributes."""
    labels = _labels(request, dataset)
    paths = _sample_paths(dataset)
    if paths is not None:
        if len(paths) != len(labels):
            raise layout_error(request, root, f"{len(paths)} images but {len(labels)} labels")
        names = relative_names(paths, root)
        order = np.argsort(np.asarray(names, dtype=object), kind="stable")
        samples: object = tuple(names[i] for i in order)
        labels = labels[order]
        files = paths
    else:
        order = np.arange(len(labels))
        samples = files_identity(root)
        files = [root / name for name, _ in samples]
    config = tuple(sorted((k, repr(v)) for k, v in kwargs.items() if k != "download"))
    native = _native_classes(dataset)
    info = {"torchvision_class": type(dataset).__name__, "native_split": kwargs.get("split", kwargs.get("train"))}
    if native:
        info["native_classes"] = native
    return LabelledImages(
        dataset=request.dataset,
        split=request.split,
        labels=labels,
        read=lambda i: to_rgb(dataset[int(order[i])][0]),
        identity=(type(dataset).__name__.removesuffix("WithoutChecksums"), config, samples),
        classnames=native,
        info=info,
        locate=None if paths is None else (lambda i: str(paths[int(order[i])])),
        content=lazy_files_digest(files),
    )


def _labels(request: SplitRequest, dataset: Any) -> np.ndarray:
    """Return the integer labels of ``dataset`` from its attributes (decoding items only as a last resort)."""
    for attr in _LABEL_ATTRS:
        value = getattr(dataset, attr, None)
        if value is not None:
            return np.asarray(value, dtype=np.int64).reshape(-1)
    for attr in _PAIR_ATTRS:
        value = getattr(dataset, attr, None)
        if value is not None:
            return np.asarray([pair[1] for pair in value], dtype=np.int64)
    logger.warning("dataset %r: %s exposes no label list; reading every item once to get labels (slow)",
                   request.dataset, type(dataset).__name__)
    return np.asarray([int(dataset[i][1]) for i in range(len(dataset))], dtype=np.int64)


def _sample_paths(dataset: Any) -> list[Path] | None:
    """Return the per-sample image paths of ``dataset``, or ``None`` for array-backed datasets."""
    for attr in _PATH_ATTRS:
        value = getattr(dataset, attr, None)
        if value is not None:
            return [Path(p) for p in value]
    for attr in _PAIR_ATTRS:
        value = getattr(dataset, attr, None)
        if value is not None:
            return [Path(pair[0]) for pair in value]
    return None


def _native_classes(dataset: Any) -> tuple[str, ...]:
    """Return the class names torchvision knows for ``dataset`` (empty when it has none)."""
    for attr in ("classes", "categories"):
        value = getattr(dataset, attr, None)
        if value:
            return tuple(str(v) for v in value)
    return ()


class _AllowListedPickle:
    """Stands in for the ``pickle`` module inside torchvision code run without checksums."""

    @staticmethod
    def load(file: BinaryIO, encoding: str = "latin1", **_: Any) -> Any:
        return restricted_loads(file.read(), NUMPY_ARRAY_GLOBALS, source=str(getattr(file, "name", "<file>")),
                                encoding=encoding)


def _file_present(fpath: str | Path, md5: str | None = None) -> bool:
    return os.path.isfile(fpath)


_REBOUND_GLOBALS: dict[str, Any] = {"check_integrity": _file_present, "pickle": _AllowListedPickle}


def without_checksums(cls: type) -> type:
    """Return a subclass of ``cls`` whose integrity checks only test that files exist.

    Every method that calls torchvision's module-level ``check_integrity`` or ``pickle`` is re-created with those
    two names bound to a presence check and to the allow-listed unpickler; nothing else changes.
    """
    namespace: dict[str, Any] = {}
    for name in dir(cls):
        function = inspect.getattr_static(cls, name)
        if isinstance(function, FunctionType) and set(function.__code__.co_names) & _REBOUND_GLOBALS.keys():
            namespace[name] = _rebind(function)
    return type(f"{cls.__name__}WithoutChecksums", (cls,), namespace)


def _rebind(function: FunctionType) -> FunctionType:
    """Copy ``function`` with the names of ``_REBOUND_GLOBALS`` replaced in its globals."""
    rebound = FunctionType(function.__code__, {**function.__globals__, **_REBOUND_GLOBALS}, function.__name__,
                           function.__defaults__, function.__closure__)
    rebound.__kwdefaults__ = function.__kwdefaults__
    rebound.__qualname__ = function.__qualname__
    return rebound
