"""``overspec sweep [CONFIG]``: move each fine-tune from its base to itself in weight space and read the trade-off.

Runs the study (reusing whatever it finished), then every fine-tune at each strength λ and the merged multi-task
models in ``<output_dir>/<name>-sweep``; prints the λ tables, the Pareto frontier and the λ that keeps ``--keep`` of
the base's general accuracy, and writes them (Markdown, CSV, figure) to that run's ``sweep/`` folder.
"""

from __future__ import annotations

import argparse

from overspec.cli.run import add_config_arguments, config_of
from overspec.errors import InputError

__all__ = ["add_parser", "handler", "parse_lambdas"]


def parse_lambdas(text: str) -> tuple[float, ...]:
    """Return the λ grid of ``--lambdas``: comma-separated values, or ``start:stop:step`` (stop included)."""
    try:
        if ":" in text:
            start, stop, step = (float(part) for part in text.split(":"))
            if step <= 0:
                raise ValueError
            count = int(round((stop - start) / step)) + 1
            return tuple(round(start + i * step, 10) for i in range(count))
        return tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise InputError(f"--lambdas: expected values like 0,0.5,1 or 0:1:0.1, got {text!r}") from None


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``sweep`` with the run's config arguments plus the λ grid, ``--keep`` and ``--no-merged``."""
    parser = sub.add_parser("sweep", help="evaluate each fine-tune at strengths λ between its base and itself",
                            description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                            epilog="examples:\n  overspec sweep\n  overspec sweep --lambdas 0:1:0.25 --keep 0.98\n"
                                   "  overspec sweep study.yaml --device cuda")
    add_config_arguments(parser)
    parser.add_argument("--lambdas", default="0:1:0.1", help="strengths: 0,0.5,1 or start:stop:step (default 0:1:0.1)")
    parser.add_argument("--keep", type=float, default=0.99,
                        help="share of the base's general accuracy to keep when choosing λ (default 0.99)")
    parser.add_argument("--no-merged", dest="merged", action="store_false",
                        help="skip the merged multi-task models (sums of a base's fine-tunes)")
    parser.set_defaults(handler=handler)


def handler(args: argparse.Namespace) -> int:
    """Run the sweep and print its Markdown summary and where it was written."""
    from overspec.runner import validated_settings
    from overspec.sweep import run_sweep, sweep_markdown

    config = config_of(args)
    validated_settings(config, where=str(args.config or "default config"))
    result = run_sweep(config, lambdas=parse_lambdas(args.lambdas), keep=args.keep, merged=args.merged)
    print(sweep_markdown(result))
    print(f"sweep: {result.run_dir / 'sweep' / 'sweep.md'}")
    return 0
