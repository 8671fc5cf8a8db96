"""``finetune(...)``: one recipe on one base model and one training set, producing a loadable model preset.

Outputs under ``out_dir``: ``adapter.safetensors`` (LoRA, kind ``lora``), ``head.safetensors`` (MAD / PAD),
``model.yaml`` (a :class:`~overspec.models.spec.ModelSpec` preset: the base's source, architecture, weights and
preprocessing plus ``adapter``, ``head``, ``base`` and ``specialisation``), ``train_log.jsonl``,
``checkpoints/`` and ``finetune.json`` (config hash, resolved config, final validation, timing). A second call
with the same config hash returns the existing ``model.yaml`` at once.

Data: ``"world"`` (or None) is the embedded biometric world (FR: ``fr_train/`` with ``verification/lfw.bin``
for validation; MAD: ``mad/protocol.csv``, train split with 20 % of its subjects held out as dev; PAD: train and
dev splits of sources O, C, I, target M). Otherwise FR takes identity folders, a ``.rec`` file (or a folder
holding ``train.rec``) or webdataset shards, with an optional ``.bin`` for validation; MAD / PAD take a
protocol CSV (its ``dev`` split validates; without one, subjects are held out of ``train``).
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
import yaml

from overspec import distributed
from overspec.data.base import LabelledImages
from overspec.finetune.data import carve_dev, identity_folders, read_record_file, read_wds_shards
from overspec.finetune.recipes import FinetuneConfig, config_hash
from overspec.finetune.trainer import AttackValidator, Trainer, VerificationValidator
from overspec.models.heads import save_binary_head
from overspec.models.registry import load_model, register_preset_file, resolve_spec
from overspec.models.spec import ModelSpec
from overspec.registry import Registry

__all__ = ["TrainingData", "training_data", "world_training_data", "resolve_base_spec", "finetune",
           "model_preset_dict", "MODEL_FILE", "WORLD_PAD_TARGET"]

logger = logging.getLogger(__name__)

MODEL_FILE = "model.yaml"
RUN_FILE = "finetune.json"
WORLD_PAD_TARGET = "M"


@dataclass
class TrainingData:
    """A training split, the validator run during training, held-out splits for reporting, and a content key."""

    train: LabelledImages
    validator: object | None
    held_out: dict
    identity: str


def _verification_validator(path: Path | None):
    if path is None:
        return None
    from overspec.data.formats.bin_pairs import read_bin

    return VerificationValidator(read_bin(path))


def world_training_data(task: str, cache_dir: Path, config: FinetuneConfig) -> TrainingData:
    """The embedded biometric world's training data for ``task`` (generated on first use under the cache)."""
    from overspec.data.biometric.attack_list import leave_one_out, read_protocol
    from overspec.data.world.biometric import ensure_biometric_world, read_manifest

    root = ensure_biometric_world(Path(cache_dir) / "world-data" / "world" / "biometric")
    manifest = read_manifest(root)
    if task == "fr":
        train = identity_folders(root / "fr_train", name="world-fr-train")
        validator = _verification_validator(Path(manifest["verification"]["lfw"]))
        return TrainingData(train, validator, {}, f"world:{train.fingerprint}")
    if task == "mad":
        protocol = read_protocol(manifest["mad"]["protocol"], name="world-mad", task="mad")
        train, dev = carve_dev(protocol.split("train"), config.dev_fraction, config.seed)
        test = protocol.split("test")
    else:
        sources = {k: read_protocol(root / "pad" / k / "protocol.csv", name=f"world-pad-{k}", task="pad")
                   for k in ("O", "C", "I", "M")}
        protocol = leave_one_out(sources, WORLD_PAD_TARGET, sources=("O", "C", "I"))
        train, dev, test = protocol.split("train"), protocol.split("dev"), protocol.split("test")
    validator = AttackValidator(dev, method=config.eer_method)
    return TrainingData(train, validator, {"dev": dev, "test": test}, f"world:{train.fingerprint}:{dev.fingerprint}")


def _fr_images(path: Path) -> LabelledImages:
    if path.suffix == ".rec":
        return read_record_file(path)
    if path.is_dir() and (path / "train.rec").is_file():
        return read_record_file(path / "train.rec")
    if path.suffix == ".tar" or (path.is_dir() and any(path.glob("*.tar"))):
        return read_wds_shards(path)
    return identity_folders(path)


def training_data(task: str, data: str | Path | None, *, cache_dir: Path, config: FinetuneConfig,
                  val: str | Path | None = None) -> TrainingData:
    """Resolve ``data`` (``"world"``/None, a folder, a ``.rec``, shards or a protocol CSV) for ``task``."""
    if data is None or str(data) == "world":
        return world_training_data(task, cache_dir, config)
    path = Path(data).expanduser()
    if task == "fr":
        train = _fr_images(path)
        validator = _verification_validator(Path(val) if val else None)
        return TrainingData(train, validator, {}, train.fingerprint)
    from overspec.data.biometric.attack_list import read_protocol

    protocol = read_protocol(path, task=task)
    if "dev" in protocol.splits():
        train, dev = protocol.split("train"), protocol.split("dev")
    else:
        train, dev = carve_dev(protocol.split("train"), config.dev_fraction, config.seed)
    held_out = {"dev": dev, **({"test": protocol.split("test")} if "test" in protocol.splits() else {})}
    return TrainingData(train, AttackValidator(dev, method=config.eer_method), held_out,
                        f"{train.fingerprint}:{dev.fingerprint}")


def resolve_base_spec(base: str | Path | ModelSpec) -> ModelSpec:
    """A preset name, a preset YAML path (read without registering it globally) or a spec."""
    if isinstance(base, ModelSpec):
        return base
    text = str(base)
    if text.endswith((".yaml", ".yml")):
        return register_preset_file(Path(text).expanduser(), Registry("model"))
    return resolve_spec(text)


def model_preset_dict(base: ModelSpec, name: str, task: str, adapter: Path, head: Path | None,
                      description: str) -> dict:
    """The preset of a fine-tune: the base's loading fields plus adapter, head, base and specialisation."""
    spec = replace(base, name=name, adapter=str(Path(adapter).resolve()),
                   head=str(Path(head).resolve()) if head else None, base=base.name, specialisation=task,
                   description=description, reference=f"overspec finetune of {base.name}")
    data = json.loads(json.dumps(asdict(spec)))
    defaults = json.loads(json.dumps(asdict(ModelSpec(name=name))))
    return {k: v for k, v in data.items() if k == "name" or v != defaults[k]}


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _existing_result(out_dir: Path, run_hash: str) -> Path | None:
    try:
        record = json.loads((out_dir / RUN_FILE).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    model = out_dir / MODEL_FILE
    return model if record.get("config_hash") == run_hash and model.is_file() else None


def finetune(recipe_config: FinetuneConfig, base_spec: str | Path | ModelSpec, data: str | Path | TrainingData | None,
             out_dir: str | Path, *, cache_dir: str | Path, device: str = "cpu", val: str | Path | None = None,
             name: str | None = None, progress: bool = False, resume: bool = True) -> Path:
    """Fine-tune ``base_spec`` with ``recipe_config`` on ``data`` into ``out_dir``; return the ``model.yaml`` path.

    Deterministic for a seed (on CPU); an ``out_dir`` that already holds the result of the same config, base and
    data is reused; an interrupted run continues from its newest checkpoint when ``resume``.
    """
    from overspec.models.lora import inject_lora, lora_parameters, save_lora_adapter

    config, out_dir, cache_dir = recipe_config, Path(out_dir), Path(cache_dir)
    base = resolve_base_spec(base_spec)
    if not isinstance(data, TrainingData):
        data = training_data(config.task, data, cache_dir=cache_dir, config=config, val=val)
    run_hash = config_hash(config, json.dumps(asdict(base), sort_keys=True, default=str), data.identity)
    existing = _existing_result(out_dir, run_hash)
    if existing is not None:
        logger.info("%s already holds this fine-tune (config hash %s)", out_dir, run_hash)
        return existing
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    torch.manual_seed(config.seed)
    encoder = load_model(base, cache_dir=cache_dir, device=device)
    lora = config.lora
    inject_lora(encoder.module, lora)
    trainer = Trainer(config, encoder, data.train, out_dir, adapter_parameters=lora_parameters(encoder.module),
                      validator=data.validator, device=device, progress=progress, run_hash=run_hash)
    result = trainer.fit(resume=resume)
    model_path = out_dir / MODEL_FILE
    if distributed.is_main():
        adapter = save_lora_adapter(out_dir / "adapter.safetensors", encoder, encoder.module, lora)
        head = None
        if config.task != "fr":
            from overspec.models.lora import lora_base_fingerprint

            head = save_binary_head(out_dir / "head.safetensors", result.head.to_binary_head(),
                                    base_fingerprint=lora_base_fingerprint(encoder))
        preset = model_preset_dict(base, name or f"{base.name}-{config.task}", config.task, adapter, head,
                                   f"{base.name} fine-tuned with the {config.recipe} recipe ({config.steps} steps)")
        _write_text(model_path, yaml.safe_dump(preset, sort_keys=False))
        record = {"config_hash": run_hash, "config": config.to_dict(), "base": base.name,
                  "data": data.identity, "validation": result.validation, "seconds": time.perf_counter() - started,
                  "train_seconds": result.seconds, "resumed_from": result.resumed_from, "steps": config.steps,
                  "final_loss": result.losses[-1] if result.losses else None, "device": device}
        _write_text(out_dir / RUN_FILE, json.dumps(record, indent=1, default=str) + "\n")
    distributed.barrier()
    return model_path
