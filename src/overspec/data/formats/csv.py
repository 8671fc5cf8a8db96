"""A folder with ``classnames.txt``, optional ``templates.txt`` and one ``<split>.csv`` per split.

``<split>.csv`` has the header ``path,label``; ``path`` is relative to the root folder and ``label`` an integer
index into ``classnames.txt`` (one name per line, in label order). ``templates.txt`` holds one template per line
with the placeholder ``{c}``. This is the format of the embedded world and of users' own data.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from overspec.data.base import LabelledImages, leaves_folder
from overspec.data.digests import lazy_files_digest
from overspec.data.formats import SplitRequest
from overspec.data.formats.common import check_options, layout_error, read_lines, require_dir, require_file
from overspec.data.images import open_rgb

__all__ = ["load_split", "HEADER"]

HEADER = ("path", "label")


def load_split(request: SplitRequest) -> LabelledImages:
    """Read ``<root>/<split>.csv`` and the class names (and templates) beside it."""
    check_options(request, ())
    root = require_dir(request, request.root)
    classnames = read_lines(require_file(request, root / "classnames.txt"))
    if not classnames:
        raise layout_error(request, root / "classnames.txt", "no class names")
    templates_file = root / "templates.txt"
    templates = read_lines(templates_file) if templates_file.is_file() else []
    table = require_file(request, root / f"{request.split}.csv")
    rel_paths, labels = _read_table(request, table, len(classnames))
    _check_files_exist(request, root, rel_paths)
    return LabelledImages(
        dataset=request.dataset,
        split=request.split,
        labels=np.asarray(labels, dtype=np.int64),
        read=lambda i: open_rgb(root / rel_paths[i]),
        identity=tuple(rel_paths),
        classnames=tuple(classnames),
        templates=tuple(templates),
        info={"table": table.name, "native_classes": tuple(classnames)},
        locate=lambda i: str(root / rel_paths[i]),
        content=lazy_files_digest([root / p for p in rel_paths]),
    )


def _read_table(request: SplitRequest, table: Path, num_classes: int) -> tuple[list[str], list[int]]:
    """Return the paths and labels of ``table``, rejecting a wrong header, bad labels or an empty table."""
    try:
        with open(table, newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.reader(handle))
    except UnicodeDecodeError as exc:
        raise layout_error(request, table, f"not UTF-8 text (byte {exc.start}: {exc.reason})") from None
    if not rows or tuple(cell.strip() for cell in rows[0]) != HEADER:
        raise layout_error(request, table, f"the first line must be the header {','.join(HEADER)}")
    paths, labels = [], []
    for line_number, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        if len(row) != 2:
            raise layout_error(request, table, f"line {line_number}: expected 2 columns, found {len(row)}")
        path, label = row[0].strip(), row[1].strip()
        if not label.lstrip("-").isdigit() or not 0 <= int(label) < num_classes:
            raise layout_error(request, table,
                               f"line {line_number}: label {label!r} is not an integer in [0, {num_classes})")
        if leaves_folder(path):
            raise layout_error(request, table, f"line {line_number}: path {path!r} leaves the dataset folder; "
                                               "paths are relative to it")
        paths.append(path)
        labels.append(int(label))
    if not paths:
        raise layout_error(request, table, "no samples")
    return paths, labels


def _check_files_exist(request: SplitRequest, root: Path, rel_paths: list[str]) -> None:
    missing = [p for p in rel_paths if not (root / p).is_file()]
    if missing:
        raise layout_error(request, root / missing[0], f"image file not found ({len(missing)} listed files missing)")
