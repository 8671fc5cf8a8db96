"""``overspec datasets``: list every registered dataset and whether its data is present under a data root."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["add_parser", "handler"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``datasets``."""
    parser = sub.add_parser("datasets", help="list datasets and whether their data is present", description=__doc__)
    parser.add_argument("--data-root", type=Path, default=None,
                        help="folder holding the datasets (default: the embedded world's generated folder)")
    parser.set_defaults(handler=handler)


def handler(args: argparse.Namespace) -> int:
    """Print name, tasks, presence and the reason when absent."""
    from overspec.config.run import default_cache_dir
    from overspec.data.catalog import dataset_registry, dataset_status

    root = args.data_root or default_cache_dir() / "world-data"
    registry = dataset_registry()
    rows = [("name", "tasks", "study", "present", "detail")]
    for name in registry.names():
        entry = registry.get(name)
        present, detail = dataset_status(entry, root)
        rows.append((name, ",".join(entry.tasks), "yes" if getattr(entry, "study", False) else "",
                     "yes" if present else "no", detail))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row[:-1], widths)) + "  " + row[-1])
    print(f"data root: {root}")
    return 0
