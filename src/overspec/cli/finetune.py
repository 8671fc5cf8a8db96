"""``overspec finetune RECIPE --base MODEL``: LoRA-fine-tune a base model with a shipped or custom recipe.

Every recipe field can be overridden with ``--set key=value`` (dotted keys for sections, e.g.
``--set lora.rank=4 --set optim.lr_head=1e-3``). With ``--data world`` (the default) the embedded biometric world
is used with the recipe's ``world`` profile, whose forgetting monitor scores a world general dataset zero-shot at
step 0 and at each validation. ``--select`` picks the exported step: ``last``, ``best`` (best biometric validation)
or ``keep:F`` (best biometric validation among steps keeping >= F x the base's general zero-shot). Under
``torchrun --nproc-per-node N`` the global batch is split over the ranks (DDP, NCCL on GPUs and gloo on CPU).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

__all__ = ["add_parser", "handler", "select_rule"]

EXAMPLES = """examples:
  overspec finetune froundation --base tiny-s
  overspec finetune madation --base tiny-m --steps 300 --set optim.lr_head=5e-3
  overspec finetune foundpad --base tiny-s --select keep:0.99
  overspec finetune froundation --base my-vit-b-16.yaml --data /data/casia --val /data/lfw.bin --device cuda
  torchrun --nproc-per-node 4 -m overspec.cli.main finetune foundpad --base openai-vit-b-16 --data pad.csv
"""


def select_rule(text: str) -> str:
    """``text`` when it is a valid ``--select`` rule; argparse's error naming the flag otherwise."""
    from overspec.errors import InputError
    from overspec.finetune.selection import parse_rule

    try:
        return str(parse_rule(text, where="--select"))
    except InputError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``finetune`` and its flags."""
    parser = sub.add_parser("finetune", help="LoRA fine-tune a model with a recipe (froundation, madation, foundpad)",
                            description=__doc__, epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipe", help="shipped recipe name or a recipe YAML file")
    parser.add_argument("--base", required=True, help="base model: preset name (e.g. tiny-s) or a preset YAML")
    parser.add_argument("--data", default="world", help="training data (default: the embedded world)")
    parser.add_argument("--val", default=None, help="FR validation pair set (.bin); MAD/PAD use the list's dev split")
    parser.add_argument("--output", type=Path, default=None, help="output folder (default: finetunes/<name>)")
    parser.add_argument("--name", default=None, help="name of the fine-tuned model (default: <base>-<task>)")
    parser.add_argument("--profile", default=None, help="recipe profile (default: 'world' with --data world)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a recipe field (repeatable)")
    parser.add_argument("--select", type=select_rule, default=None, metavar="RULE",
                        help="exported step: last (default), best, keep:F with 0 < F <= 1 (sets monitor.select)")
    parser.add_argument("--monitor-root", type=Path, default=None,
                        help="data root of monitor.dataset (default: the embedded world for a world dataset)")
    parser.add_argument("--steps", type=int, default=None, help="number of optimisation steps")
    parser.add_argument("--cache-dir", type=Path, default=None, help="cache folder (models, generated world)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    parser.add_argument("--no-resume", dest="resume", action="store_false", help="ignore existing checkpoints")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="progress bar")
    parser.set_defaults(handler=handler)


def handler(args: argparse.Namespace) -> int:
    """Resolve recipe, profile and overrides, fine-tune, and print where the model preset is."""
    from overspec import distributed
    from overspec.config.run import default_cache_dir
    from overspec.finetune import finetune, load_recipe
    from overspec.finetune.run import resolve_base_spec

    world = str(args.data) == "world"
    profile = args.profile or ("world" if world else None)
    overrides = list(args.overrides) + ([f"steps={args.steps}"] if args.steps is not None else []) \
        + ([f"monitor.select={args.select}"] if args.select is not None else [])
    config = load_recipe(args.recipe, profile=profile, overrides=tuple(overrides))
    base = resolve_base_spec(args.base)
    name = args.name or f"{base.name}-{config.task}"
    device = args.device
    distributed.init_from_env(device)
    if device.startswith("cuda") and distributed.is_distributed():
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    output = args.output or Path("finetunes") / name
    model = finetune(config, base, args.data, output, cache_dir=args.cache_dir or default_cache_dir(),
                     device=device, val=args.val, name=name, progress=args.progress, resume=args.resume,
                     monitor_root=args.monitor_root)
    if distributed.is_main():
        print(f"fine-tuned {name} ({config.recipe}, {config.steps} steps{_exported(model.parent)}) -> {model}")
    return 0


def _exported(out_dir: Path) -> str:
    """``; exported step N (rule)`` from the run record, or nothing when it holds no selection."""
    from overspec.finetune.run import RUN_FILE

    selection = json.loads((out_dir / RUN_FILE).read_text()).get("selection") or {}
    return f"; exported step {selection['step']} ({selection['rule']})" if selection else ""
