"""``overspec export MODEL --output model.onnx``: write a model's (LoRA-merged) image tower as ONNX.

The file has one input ``image`` (batch, 3, H, W) with a dynamic batch axis and one output ``embedding``, as in the
IJCB 2026 foundation-model FR competition; its preprocessing is recorded in the ONNX metadata. The export is checked
against PyTorch with onnxruntime on random batches of 2 and 3 images. Needs ``overspec[export]``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from overspec.errors import InputError

__all__ = ["add_parser", "handler"]

EXAMPLES = """examples:
  overspec export tiny-s --output tiny-s.onnx
  overspec export finetunes/tiny-s-fr/model.yaml --output fr.onnx --opset 17
  overspec export froundation-vit-b-16-webface4m --output submission.onnx
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``export`` and its flags."""
    parser = sub.add_parser("export", help="export a model's image tower to ONNX (parity-checked)",
                            description=__doc__, epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="model preset name or a preset YAML file")
    parser.add_argument("--output", "-o", type=Path, required=True, help="ONNX file to write")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset version (default 17)")
    parser.add_argument("--tolerance", type=float, default=1e-4, help="max abs difference allowed vs PyTorch")
    parser.add_argument("--dynamo", action="store_true", help="use the torch.export-based exporter (needs onnxscript)")
    parser.add_argument("--cache-dir", type=Path, default=None, help="cache folder (models, generated world)")
    parser.set_defaults(handler=handler)


def _resolve(model: str):
    """A preset name or a preset YAML path (read without registering it globally) → spec."""
    from overspec.models.registry import register_preset_file, resolve_spec
    from overspec.registry import Registry

    if model.endswith((".yaml", ".yml")):
        path = Path(model).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"model preset file not found: {path}")
        return register_preset_file(path, Registry("model"))
    return resolve_spec(model)


def handler(args: argparse.Namespace) -> int:
    """Load the model, export it, and print the parity numbers."""
    from overspec.config.run import default_cache_dir
    from overspec.models.export import ExportError, export_onnx, require_export_packages
    from overspec.models.registry import load_model

    spec = _resolve(args.model)
    try:
        require_export_packages()
        encoder = load_model(spec, cache_dir=args.cache_dir or default_cache_dir(), device="cpu")
        report = export_onnx(encoder, args.output, opset=args.opset, tolerance=args.tolerance, dynamo=args.dynamo)
    except ExportError as exc:
        raise InputError(str(exc)) from None
    diffs = ", ".join(f"batch {n}: {d:.3g}" for n, d in report["max_abs_diff"].items())
    print(f"exported {spec.name} -> {report['path']} (opset {report['opset']}, input {report['input_shape']}, "
          f"LoRA layers merged: {report['lora_merged']})")
    print(f"parity vs PyTorch (max abs difference, onnxruntime {report['onnxruntime']}): {diffs}; "
          f"tolerance {report['tolerance']:g}")
    return 0
