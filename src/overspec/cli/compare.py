"""``overspec compare RUN_A RUN_B``: what changed between two runs (records, values, config, versions)."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["add_parser", "handler"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``compare``."""
    parser = sub.add_parser("compare", help="show what changed between two runs", description=__doc__)
    parser.add_argument("run_a", type=Path, help="the earlier run directory")
    parser.add_argument("run_b", type=Path, help="the later run directory")
    parser.add_argument("--tolerance", type=float, default=1e-9,
                        help="absolute difference below which a value counts as unchanged (default 1e-9)")
    parser.set_defaults(handler=handler)


def handler(args: argparse.Namespace) -> int:
    """Print the comparison as Markdown."""
    from overspec.report.build import compare_runs

    print(compare_runs(args.run_a, args.run_b, tolerance=args.tolerance), end="")
    return 0
