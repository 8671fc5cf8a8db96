"""Entry point of the ``overspec`` command: builds the parser from the subcommand modules and reports errors."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import traceback

from overspec.errors import InputError
from overspec.registry import RegistryError

__all__ = ["main", "build_parser"]

SUBCOMMANDS = ("run", "sweep", "models", "datasets", "finetune", "report", "compare", "export")

EXAMPLES = """examples:
  overspec run                              the study on the embedded world (tiny CLIPs, no downloads)
  overspec run configs/my-study.yaml        the models and datasets a config names
  overspec run my.yaml --data-root /data --device cuda --batch-size 256
  overspec models                           registered model presets
  overspec datasets --data-root /data       every dataset and whether its files are present
"""


def build_parser() -> argparse.ArgumentParser:
    """Return the top-level parser with one subparser per subcommand module."""
    parser = argparse.ArgumentParser(
        prog="overspec", description="What did the specialisation cost? Evaluate foundation models and their "
        "biometric fine-tunes side by side.", epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS:
        importlib.import_module(f"overspec.cli.{name}").add_parser(sub)
    return parser


def _user_errors() -> tuple[type[BaseException], ...]:
    from overspec.data.base import DatasetLayoutError
    from overspec.models.base import ModelLoadError

    return (InputError, RegistryError, DatasetLayoutError, ModelLoadError, FileNotFoundError)


def _one_line(exc: BaseException) -> str:
    """The message of ``exc`` on one line (a library's multi-line complaint collapsed)."""
    return " ".join(str(exc).split())


def _os_error_line(exc: OSError) -> str:
    """An operating-system failure (permission, full disk, a folder where a file goes) on one line naming the path."""
    reason = exc.strerror or " ".join(str(exc).split())
    where = f"{exc.filename}: " if exc.filename else ""
    return f"{where}{reason}" + (f" -> {exc.filename2}" if exc.filename2 else "")


def main(argv: list[str] | None = None) -> int:
    """Run the ``overspec`` command; user errors print one line and exit with status 2."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger().handlers[0].setLevel(logging.DEBUG if args.verbose else logging.WARNING)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return int(args.handler(args) or 0)
    except KeyboardInterrupt:
        print(f"overspec {args.command}: interrupted; run the same command to resume", file=sys.stderr)
        return 130
    except _user_errors() as exc:
        if args.verbose:
            raise
        print(f"overspec {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except OSError as exc:
        if args.verbose:
            raise
        print(f"overspec {args.command}: error: {_os_error_line(exc)}", file=sys.stderr)
        return 2
    except Exception:
        traceback.print_exc()
        print(f"overspec {args.command}: internal error: this is a bug in overspec, not in your input; please "
              "report it with the traceback above", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
