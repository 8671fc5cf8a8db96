"""``overspec sweep [CONFIG]``: move each fine-tune from its base to itself in weight space and read the trade-off.

Runs the study (reusing whatever it finished), fine-tunes the regularised variants (feature distillation, L2-SP, a
lower LoRA rank; ``--regularised`` replaces the defaults), then evaluates every fine-tune at each strength λ, the
merged multi-task models and the regularised fine-tunes in ``<output_dir>/<name>-sweep``; prints the λ tables, the
Pareto frontier, the λ that keeps ``--keep`` of the base's general accuracy and where each regularised fine-tune lies
against its λ path, and writes them (Markdown, CSV, figure) to that run's ``sweep/`` folder. The study's own report
is then rebuilt with the sweep as a section.
"""

from __future__ import annotations

import argparse

from overspec.cli.run import add_config_arguments, config_of
from overspec.errors import InputError

__all__ = ["add_parser", "handler", "parse_lambdas", "regularised_of"]


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


def regularised_of(args: argparse.Namespace) -> tuple:
    """Return the regularised variants the arguments ask for: ``--regularised`` ones, else the defaults, none with
    ``--no-regularised``."""
    from overspec.finetune.variants import parse_variant
    from overspec.sweep import DEFAULT_REGULARISED

    if args.no_regularised:
        return ()
    return tuple(parse_variant(text) for text in args.regularised) if args.regularised else DEFAULT_REGULARISED


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``sweep`` with the run's config arguments plus the λ grid, ``--keep`` and ``--no-merged``."""
    parser = sub.add_parser("sweep", help="evaluate each fine-tune at strengths λ between its base and itself",
                            description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                            epilog="examples:\n  overspec sweep\n  overspec sweep --lambdas 0:1:0.25 --keep 0.98\n"
                                   "  overspec sweep study.yaml --device cuda\n"
                                   "  overspec sweep --regularised froundation:regularise.distill=2 "
                                   "--regularised madation:lora.rank=1,regularise.l2sp=0.1")
    add_config_arguments(parser)
    parser.add_argument("--lambdas", default="0:1:0.1",
                        help="strengths: 0,0.5,1 or start:stop:step (default 0:1:0.1)")
    parser.add_argument("--keep", type=float, default=0.99,
                        help="share of the base's general accuracy to keep when choosing λ (default 0.99)")
    parser.add_argument("--no-merged", dest="merged", action="store_false",
                        help="skip the merged multi-task models (sums of a base's fine-tunes)")
    parser.add_argument("--regularised", action="append", default=[], metavar="RECIPE:KEY=VALUE[,KEY=VALUE]",
                        help="a regularised fine-tune to place on the frontier (repeatable; replaces the defaults: "
                             "distill=0.3, l2sp=0.01 and lora.rank=1 per recipe)")
    parser.add_argument("--no-regularised", action="store_true", help="no regularised fine-tunes")
    parser.add_argument("--regularised-bases", type=int, default=1, metavar="N",
                        help="make the regularised fine-tunes on the study's first N fine-tuned bases (default 1; "
                             "0: every base)")
    parser.add_argument("--no-report", dest="report", action="store_false",
                        help="do not rebuild the study's report (which includes the sweep's section)")
    parser.set_defaults(handler=handler)


def handler(args: argparse.Namespace) -> int:
    """Run the sweep and print its Markdown summary and where it was written."""
    from overspec.runner import validated_settings
    from overspec.sweep import run_sweep, sweep_markdown

    config = config_of(args)
    validated_settings(config, where=str(args.config or "default config"))
    result = run_sweep(config, lambdas=parse_lambdas(args.lambdas), keep=args.keep, merged=args.merged,
                       regularised=regularised_of(args), regularised_bases=args.regularised_bases)
    print(sweep_markdown(result))
    print(f"sweep: {result.run_dir / 'sweep' / 'sweep.md'}")
    if args.report:
        from overspec.report.build import build_report

        print(f"report with the sweep's section: {build_report(config.run_dir) / 'report.html'}")
    return 0
