"""Loaders that turn one on-disk dataset layout into :class:`~overspec.data.base.LabelledImages`.

One module per file *format* (never per dataset); a dataset is a catalog YAML naming its format and options.
Every loader has the signature ``load_split(request: SplitRequest) -> LabelledImages`` and raises
:class:`~overspec.data.base.DatasetLayoutError` for a missing or malformed root. Formats are registered lazily,
so importing this package imports no loader (and no torchvision).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from overspec.data.base import LabelledImages
from overspec.registry import Registry

__all__ = ["FORMATS", "FormatLoader", "SplitRequest"]


@dataclass(frozen=True)
class SplitRequest:
    """What a format loader needs: the dataset's name, its root folder, the native split and the YAML options.

    ``layout`` is the human description of the expected files, quoted in :class:`DatasetLayoutError` messages.
    """

    dataset: str
    root: Path
    split: str
    layout: str
    options: Mapping[str, Any] = field(default_factory=dict)


FormatLoader = Callable[[SplitRequest], LabelledImages]

FORMATS: Registry[FormatLoader] = Registry("dataset format")
FORMATS.register_lazy("torchvision", "overspec.data.formats.torchvision:load_split")
FORMATS.register_lazy("imagenetv2", "overspec.data.formats.imagenetv2:load_split")
FORMATS.register_lazy("wds", "overspec.data.formats.wds:load_split")
FORMATS.register_lazy("imagefolder", "overspec.data.formats.imagefolder:load_split")
FORMATS.register_lazy("csv", "overspec.data.formats.csv:load_split")
