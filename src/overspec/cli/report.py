"""``overspec report RUN_DIR``: rebuild a run's trade-off report (tables, intervals, findings, figures)."""

from __future__ import annotations

import argparse
from pathlib import Path
from overspec.errors import InputError

__all__ = ["add_parser", "handler", "parse_size_order"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``report``."""
    parser = sub.add_parser("report", help="build the trade-off report of a finished run", description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter,
                            epilog="examples:\n  overspec report runs/default\n"
                                   "  overspec report runs/study --size-order openai-vit-b-16,openai-vit-l-14")
    parser.add_argument("run_dir", type=Path, help="run directory written by 'overspec run'")
    parser.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples (default 1000)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    parser.add_argument("--level", type=float, default=0.95, help="interval confidence level (default 0.95)")
    parser.add_argument("--size-order", default=None,
                        help="base models from smallest to largest, comma-separated (overrides provenance sizes)")
    parser.add_argument("--mcnemar", choices=("midp", "exact", "chi2"), default="midp",
                        help="McNemar variant (default: mid-p exact)")
    parser.set_defaults(handler=handler)


def parse_size_order(text: str | None) -> dict[str, float] | None:
    """Turn 'small,large' into {small: 0, large: 1}; None when not given."""
    if not text:
        return None
    names = [name.strip() for name in text.split(",") if name.strip()]
    if len(set(names)) != len(names):
        raise InputError(f"--size-order lists a model twice: {text!r}")
    return {name: float(rank) for rank, name in enumerate(names)}


def handler(args: argparse.Namespace) -> int:
    """Build the report and print where it is."""
    from overspec.report.build import build_report

    if args.n_boot < 1:
        raise InputError(f"--n-boot must be at least 1, got {args.n_boot}")
    out = build_report(args.run_dir, n_boot=args.n_boot, seed=args.seed, level=args.level,
                       size_order=parse_size_order(args.size_order), mcnemar_method=args.mcnemar)
    print(f"report written to {out} (open {out / 'report.html'})")
    return 0
