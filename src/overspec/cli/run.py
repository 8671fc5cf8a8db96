"""``overspec run [CONFIG]``: run a study and print its summary. Flags mirror the config's scalar fields."""

from __future__ import annotations

import argparse
import dataclasses
import typing

from overspec.config.run import RunConfig

__all__ = ["add_config_arguments", "add_parser", "config_of", "config_overrides", "handler"]

_LIST_FIELDS = {"models": "comma-separated model presets", "datasets": "comma-separated dataset names"}


def _scalar_fields() -> list[tuple[str, type]]:
    hints = typing.get_type_hints(RunConfig)
    return [(f.name, hints[f.name]) for f in dataclasses.fields(RunConfig) if hints[f.name] in (str, int, bool)]


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``run`` with one flag per scalar config field (``--data-root`` for ``data_root``...)."""
    parser = sub.add_parser("run", help="run a study (embedded world when no CONFIG is given)",
                            description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                            epilog="examples:\n  overspec run\n  overspec run study.yaml --data-root /data --device cuda\n"
                                   "  overspec run ijcb2025 --data-root /data --dry-run")
    add_config_arguments(parser)
    parser.add_argument("--dry-run", action="store_true",
                        help="check that every file is present and print the plan (fine-tunes, units), compute nothing")
    parser.add_argument("--no-report", dest="report", action="store_false",
                        help="skip building the trade-off report (tables, plots, HTML) after the run")
    parser.set_defaults(handler=handler)


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the CONFIG argument and one flag per scalar config field (``--data-root`` for ``data_root``...)."""
    parser.add_argument("config", nargs="?",
                        help="run config YAML, or the name of a shipped study (ijcb2025); default: the embedded world")
    for name, kind in _scalar_fields():
        flag = "--" + name.replace("_", "-")
        if kind is bool:
            parser.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, default=None,
                                help=f"config field {name}")
        else:
            parser.add_argument(flag, dest=name, type=kind, default=None, help=f"config field {name}")
    for name, text in _LIST_FIELDS.items():
        parser.add_argument("--" + name, dest=name, default=None, help=f"config field {name} ({text})")


def config_overrides(args: argparse.Namespace) -> dict:
    """Return the config fields set on the command line."""
    overrides = {name: getattr(args, name) for name, _ in _scalar_fields() if getattr(args, name) is not None}
    for name in _LIST_FIELDS:
        value = getattr(args, name)
        if value is not None:
            overrides[name] = tuple(v.strip() for v in value.split(",") if v.strip())
    return overrides


def config_of(args: argparse.Namespace) -> RunConfig:
    """Return the run config the arguments name (the embedded world study without CONFIG), flags applied."""
    from overspec.config.run import config_path, default_config, load_run_config

    overrides = config_overrides(args)
    return load_run_config(config_path(args.config), **overrides) if args.config else default_config(**overrides)


def handler(args: argparse.Namespace) -> int:
    """Load the config, run the study, print the summary table and where the results are."""
    from overspec.runner import plan_study, run_study, validated_settings

    config = config_of(args)
    validated_settings(config, where=str(args.config or "default config"))
    if args.dry_run:
        text, problems = plan_study(config)
        print(text)
        return 1 if problems else 0
    result = run_study(config)
    if args.report:
        from overspec.report.build import build_report

        report = build_report(result.run_dir)
        print((report / "answer.md").read_text())
    print((result.run_dir / "summary.md").read_text())
    if args.report:
        print(f"report: {report / 'report.html'}")
    print(f"{len(result.records)} records, {len(result.computed)} units computed, {len(result.reused)} reused, "
          f"{len(result.skipped)} not applicable, {result.seconds:.1f} s -> {result.run_dir}")
    if result.computed:
        print("time by stage (CPU-seconds of this process and its workers; also in provenance.json):\n"
              + result.stages.text())
        if result.worker_stages.cpu:
            print("inside the evaluation processes:\n" + result.worker_stages.text())
    return 0
