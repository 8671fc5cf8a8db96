"""``overspec models``: list the registered model presets."""

from __future__ import annotations

import argparse

__all__ = ["add_parser", "handler"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``models``."""
    parser = sub.add_parser("models", help="list registered model presets", description=__doc__)
    parser.set_defaults(handler=handler)


def handler(args: argparse.Namespace) -> int:
    """Print one line per preset: name, source, architecture, weights and whether it has a text tower."""
    from overspec.models import model_presets

    presets = model_presets()
    rows = [("name", "source", "architecture", "weights", "zero-shot")]
    for name in presets.names():
        spec = presets.get(name)
        rows.append((name, spec.source, spec.architecture or "-", spec.weights or "-", "yes" if spec.text else "no"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    return 0
