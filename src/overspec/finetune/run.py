"""``finetune(...)``: one recipe on one base model and one training set, producing a loadable model preset.

Outputs under ``out_dir``: ``adapter.safetensors`` (LoRA, kind ``lora``), ``head.safetensors`` (MAD / PAD),
``model.yaml`` (a :class:`~overspec.config.model.ModelSpec` preset: the base's source, architecture and weights, the
recipe's evaluation preprocessing (the base's own when the recipe has no ``train_transform``) plus ``adapter``,
``head``, ``base`` and ``specialisation``), ``train_log.jsonl``,
``checkpoints/``, ``validated/`` (each validated step's trainable state, when ``monitor.select`` is not ``last``)
and ``finetune.json`` (config hash, resolved config, final validation, the exported step and why (``selection``,
see :mod:`overspec.finetune.selection`), timing, and the sha256 and size of ``model.yaml``,
``adapter.safetensors`` and ``head.safetensors``). A second call with the same config hash
returns the existing ``model.yaml`` at once when those files still match their checksums, and retrains otherwise
(from the valid checkpoints left, with the same result).

Reliability: every output is written to a process-unique temporary name in its folder and renamed, with
``finetune.json`` last, so it marks a complete result; ``<out_dir>/.lock`` (a :class:`filelock.FileLock`)
serialises processes fine-tuning into the same folder (see :func:`finetune` for torch.distributed).

Data: ``"world"`` (or None) is the embedded biometric world's training sets (:func:`overspec.world.training_sets`:
FR identity folders validated on verification pairs; MAD's train split, with a share of its subjects held out as
dev; PAD's leave-one-out sources). Otherwise FR takes identity folders, a ``.rec`` file (or a folder
holding ``train.rec``) or webdataset shards, with an optional ``.bin`` for validation; MAD / PAD take a
protocol CSV (its ``dev`` split validates; without one, subjects are held out of ``train``).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
import yaml
from filelock import FileLock, Timeout

from overspec import distributed
from overspec.data.base import LabelledImages
from overspec.data.formats.imagefolder import class_folders
from overspec.data.formats.recordio import read_record_file
from overspec.data.formats.wds import read_shards
from overspec.files import atomic_write_text, remove_stale_temporaries
from overspec.finetune.data import carve_dev
from overspec.finetune.monitor import KEPT_FOLDER, TrainingMonitor, base_probe, kept_state, probe_images, probe_root
from overspec.finetune.recipes import FinetuneConfig, config_hash, for_architecture
from overspec.finetune.selection import Choice, choose_step, parse_rule, validation_records
from overspec.finetune.train_log import LOG_FILE
from overspec.finetune.trainer import (CHECKPOINTS, AttackValidator, Trainer, TrainResult, VerificationValidator,
                                       file_problem, file_record, from_main)
from overspec.models.base import Encoder
from overspec.models.heads import save_binary_head
from overspec.models.preprocess import own_preprocess, with_preprocess
from overspec.models.registry import load_model, register_preset_file, resolve_spec
from overspec.config.model import ModelSpec, spec_as_config
from overspec.errors import InputError
from overspec.registry import Registry

__all__ = ["TrainingData", "training_data", "world_training_data", "resolve_base_spec", "finetune",
           "model_preset_dict", "MODEL_FILE"]

logger = logging.getLogger(__name__)

MODEL_FILE = "model.yaml"
RUN_FILE = "finetune.json"
ADAPTER_FILE = "adapter.safetensors"
HEAD_FILE = "head.safetensors"
LOCK_FILE = ".lock"


@dataclass
class TrainingData:
    """A training split, the validator run during training, held-out splits for reporting, and a content key."""

    train: LabelledImages
    validator: object | None
    held_out: dict
    identity: str
    general_root: Path | None = None


def _verification_validator(path: Path | None):
    if path is None:
        return None
    from overspec.data.formats.bin_pairs import read_bin

    return VerificationValidator(read_bin(path))


def world_training_data(task: str, config: FinetuneConfig, data_root: Path) -> TrainingData:
    """The embedded biometric world's training data for ``task``, from the world prepared under ``data_root``
    (what :func:`overspec.world.prepare` returned)."""
    from overspec.world import training_sets

    sets = training_sets(task, data_root)
    if task == "fr":
        return TrainingData(sets.train, _verification_validator(sets.pairs), {}, f"world:{sets.train.fingerprint}",
                            data_root)
    train, dev = (sets.train, sets.dev) if sets.dev is not None else carve_dev(sets.train, config.dev_fraction,
                                                                               config.seed)
    validator = AttackValidator(dev, method=config.eer_method)
    return TrainingData(train, validator, {"dev": dev, "test": sets.test},
                        f"world:{train.fingerprint}:{dev.fingerprint}", data_root)


def _fr_images(path: Path) -> LabelledImages:
    if path.suffix == ".rec":
        return read_record_file(path)
    if path.is_dir() and (path / "train.rec").is_file():
        return read_record_file(path / "train.rec")
    if path.suffix == ".tar" or (path.is_dir() and any(path.glob("*.tar"))):
        return read_shards(path)
    return class_folders(path)


def training_data(task: str, data: str | Path | None, *, cache_dir: Path, config: FinetuneConfig,
                  val: str | Path | None = None) -> TrainingData:
    """Resolve ``data`` (``"world"``/None, a folder, a ``.rec``, shards or a protocol CSV) for ``task``."""
    if data is None or str(data) == "world":
        from overspec.world import default_root, prepare

        return world_training_data(task, config, prepare(default_root(cache_dir)))
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
    data = json.loads(json.dumps(spec_as_config(spec)))
    defaults = json.loads(json.dumps(asdict(ModelSpec(name=name))))
    return {k: v for k, v in data.items() if k == "name" or v != defaults[k]}


def _fed_as_recipe(encoder: Encoder, config: FinetuneConfig) -> Encoder:
    """``encoder`` fed the recipe's evaluation preprocessing (validation uses it); unchanged without a
    ``train_transform``. A recipe whose images are not the model's input size is refused here, naming the keys."""
    if config.train_transform is None:
        return encoder
    spec, own = config.train_transform.eval_spec(), own_preprocess(encoder)
    if own is not None and own.size != spec.size:
        raise InputError(f"recipe {config.recipe}: train_transform gives {spec.size} px images but model "
                         f"{encoder.name!r} takes {own.size} px; set train_transform.resize (and .crop)")
    return with_preprocess(encoder, spec)


def _result_files(task: str) -> tuple[str, ...]:
    """The outputs whose checksums ``finetune.json`` records (no head for face recognition)."""
    return (MODEL_FILE, ADAPTER_FILE) if task == "fr" else (MODEL_FILE, ADAPTER_FILE, HEAD_FILE)


def _existing_result(out_dir: Path, run_hash: str, files: tuple[str, ...], *, warn: bool = True) -> Path | None:
    """``model.yaml`` when ``out_dir`` holds a finished run of ``run_hash`` whose ``files`` match their recorded
    checksums; otherwise None (with a warning naming the damaged file when ``warn``)."""
    report = logger.warning if warn else logger.debug
    try:
        record = json.loads((out_dir / RUN_FILE).read_text())
    except FileNotFoundError:
        return None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        report("%s is unreadable (%s); retraining", out_dir / RUN_FILE, exc)
        return None
    if not isinstance(record, dict) or record.get("config_hash") != run_hash:
        return None
    recorded = record.get("files") if isinstance(record.get("files"), dict) else {}
    for name in files:
        problem = file_problem(out_dir / name, recorded.get(name))
        if problem:
            report("%s: %s; retraining (resuming from the valid checkpoints left)", out_dir, problem)
            return None
    return out_dir / MODEL_FILE


def _agreed_existing_result(out_dir: Path, run_hash: str, files: tuple[str, ...], *, warn: bool) -> Path | None:
    """:func:`_existing_result` as rank 0 sees it, on every rank (ranks must agree on whether to train)."""
    return from_main(_existing_result(out_dir, run_hash, files, warn=warn) if distributed.is_main() else None)


@contextmanager
def _out_dir_lock(out_dir: Path) -> Iterator[None]:
    """Hold ``<out_dir>/.lock`` on rank 0 (other ranks hold nothing: see :func:`finetune`)."""
    if not distributed.is_main():
        yield
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(out_dir / LOCK_FILE))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        logger.info("another process is fine-tuning into %s; waiting for it to finish", out_dir)
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


def _remove_stale_temporaries(out_dir: Path) -> None:
    """Delete temporary files and checkpoint folders left by killed runs (safe: the caller holds the lock)."""
    remove_stale_temporaries(out_dir)
    remove_stale_temporaries(out_dir / CHECKPOINTS)
    remove_stale_temporaries(out_dir / KEPT_FOLDER)


def _save_weights(out_dir: Path, encoder: Encoder, config: FinetuneConfig,
                  result: TrainResult) -> tuple[Path, Path | None]:
    """Write the LoRA adapter (and the binary head for MAD / PAD) atomically; return their paths."""
    from overspec.models.lora import lora_base_fingerprint, save_lora_adapter

    adapter = save_lora_adapter(out_dir / ADAPTER_FILE, encoder, encoder.module, config.lora)
    if config.task == "fr":
        return adapter, None
    head = save_binary_head(out_dir / HEAD_FILE, result.head.to_binary_head(),
                            base_fingerprint=lora_base_fingerprint(encoder))
    return adapter, head


def _monitor(config: FinetuneConfig, data: TrainingData, probe: LabelledImages | None, encoder: Encoder,
             out_dir: Path, cache_dir: Path) -> TrainingMonitor:
    """The forgetting monitor of a run (base text classifier cached); refuses a ``select`` rule it cannot serve."""
    rule = parse_rule(config.monitor.select, where="monitor.select")
    if rule.kind != "last" and data.validator is None:
        raise InputError(f"monitor.select {rule} picks a validated step, but this fine-tune has no validation set "
                         "(FR: give --val pairs)")
    general = base_probe(probe, encoder, cache_dir)
    if rule.kind == "keep" and general is None:
        raise InputError(f"monitor.select {rule} needs the forgetting monitor, which is off for {encoder.name}")
    return TrainingMonitor(out_dir, general, keep_states=rule.kind != "last")


def _selected(trainer: Trainer, config: FinetuneConfig, out_dir: Path) -> Choice:
    """The step ``monitor.select`` picks; the trainer's adapter and head are set to that step's kept state."""
    records = validation_records(out_dir / LOG_FILE) if (out_dir / LOG_FILE).is_file() else {}
    choice = choose_step(records, parse_rule(config.monitor.select), config.steps)
    if choice.step != config.steps:
        trainer.restore_trainable(kept_state(out_dir, choice.step, records[choice.step].get("kept")))
    logger.info("exporting step %d of %d (select %s): %s", choice.step, config.steps, choice.rule, choice.reason)
    return choice


def _train(config: FinetuneConfig, base: ModelSpec, data: TrainingData, out_dir: Path, run_hash: str, *,
           cache_dir: Path, device: str, name: str | None, progress: bool, resume: bool,
           probe: LabelledImages | None = None) -> Path:
    """Train (every rank) and write the outputs, ``finetune.json`` last (rank 0); return the ``model.yaml`` path."""
    from overspec.models.lora import inject_lora, lora_parameters

    started = time.perf_counter()
    torch.manual_seed(config.seed)
    loaded = load_model(base, cache_dir=cache_dir, device=device)
    monitor = _monitor(config, data, probe, loaded, out_dir, cache_dir)  # general images: the base's preprocessing
    encoder = _fed_as_recipe(loaded, config)
    inject_lora(encoder.module, config.lora)
    adapter_parameters = lora_parameters(encoder.module)
    trainer = Trainer(config, encoder, data.train, out_dir, adapter_parameters=adapter_parameters,
                      validator=data.validator, device=device, progress=progress, run_hash=run_hash, monitor=monitor)
    result = trainer.fit(resume=resume)
    model_path = out_dir / MODEL_FILE
    if not distributed.is_main():
        return model_path
    (out_dir / RUN_FILE).unlink(missing_ok=True)  # the record marks a complete result: gone while outputs change
    choice = _selected(trainer, config, out_dir)
    adapter, head = _save_weights(out_dir, encoder, config, result)
    fed = replace(base, preprocess=config.train_transform.eval_spec()) if config.train_transform else base
    preset = model_preset_dict(fed, name or f"{base.name}-{config.task}", config.task, adapter, head,
                               f"{base.name} fine-tuned with the {config.recipe} recipe ({config.steps} steps; "
                               f"exported step {choice.step}, select {choice.rule}: {choice.reason})")
    atomic_write_text(model_path, yaml.safe_dump(preset, sort_keys=False))
    record = {"config_hash": run_hash, "config": config.to_dict(), "base": base.name,
              "data": data.identity, "validation": result.validation, "seconds": time.perf_counter() - started,
              "train_seconds": result.seconds, "resumed_from": result.resumed_from, "steps": config.steps,
              "final_loss": result.final_loss, "device": device, "selection": asdict(choice),
              "trainable_parameters": {"adapter": sum(p.numel() for p in adapter_parameters),
                                       "head": sum(p.numel() for p in trainer.head.parameters())},
              "files": {n: file_record(out_dir / n) for n in _result_files(config.task)}}
    atomic_write_text(out_dir / RUN_FILE, json.dumps(record, indent=1, default=str) + "\n")
    return model_path


def _probe(config: FinetuneConfig, data: TrainingData, monitor_root: Path | None,
           cache_dir: Path) -> LabelledImages | None:
    """The forgetting monitor's probe images (None when ``monitor.dataset`` is empty)."""
    if not config.monitor.dataset:
        return None
    return probe_images(config.monitor, probe_root(config.monitor, monitor_root or data.general_root, cache_dir))


def finetune(recipe_config: FinetuneConfig, base_spec: str | Path | ModelSpec, data: str | Path | TrainingData | None,
             out_dir: str | Path, *, cache_dir: str | Path, device: str = "cpu", val: str | Path | None = None,
             name: str | None = None, progress: bool = False, resume: bool = True,
             monitor_root: str | Path | None = None) -> Path:
    """Fine-tune ``base_spec`` with ``recipe_config`` on ``data`` into ``out_dir``; return the ``model.yaml`` path.

    Deterministic for a seed (on CPU); an ``out_dir`` that already holds the verified result of the same config,
    base and data is reused; an interrupted or damaged run continues from its newest valid checkpoint when
    ``resume``. ``monitor_root`` is the data root of ``monitor.dataset`` (default: the training data's world, or the
    embedded world for a world dataset); the probe images' fingerprint is part of the run hash.

    Concurrency: processes of different jobs fine-tuning into one ``out_dir`` are serialised by a
    :class:`~filelock.FileLock` on ``<out_dir>/.lock``, held until the outputs are written; after acquiring it the
    result is looked for again, so a waiting process reuses the result of the one before it. Under
    torch.distributed (the ranks of ONE job) only rank 0 takes the lock: were every rank to take it, rank 1 would
    block on the lock rank 0 holds while rank 0 blocks in the first collective waiting for rank 1. The other ranks
    are held back instead by collectives: rank 0 broadcasts whether a result exists (before and after acquiring
    the lock), so they wait in that broadcast while rank 0 waits for the lock, and rank 0 releases the lock only
    after the closing barrier. A lock wait longer than the process group's timeout therefore fails the job (raise
    ``timeout`` in ``init_process_group`` when jobs queue on one folder).
    """
    config, out_dir, cache_dir = recipe_config, Path(out_dir), Path(cache_dir)
    base = resolve_base_spec(base_spec)
    config = for_architecture(config, base.architecture)
    if not isinstance(data, TrainingData):
        data = training_data(config.task, data, cache_dir=cache_dir, config=config, val=val)
    probe = _probe(config, data, Path(monitor_root) if monitor_root else None, cache_dir)
    run_hash = config_hash(config, json.dumps(spec_as_config(base), sort_keys=True, default=str), data.identity,
                           *([probe.fingerprint] if probe is not None else []))
    files = _result_files(config.task)
    existing = _agreed_existing_result(out_dir, run_hash, files, warn=False)
    if existing is not None:
        logger.info("%s already holds this fine-tune (config hash %s)", out_dir, run_hash)
        return existing
    with _out_dir_lock(out_dir):
        existing = _agreed_existing_result(out_dir, run_hash, files, warn=True)
        if existing is not None:
            logger.info("%s now holds this fine-tune (config hash %s), written by another process", out_dir, run_hash)
            return existing
        if distributed.is_main():
            _remove_stale_temporaries(out_dir)
        model_path = _train(config, base, data, out_dir, run_hash, cache_dir=cache_dir, device=device, name=name,
                            progress=progress, resume=resume, probe=probe)
        distributed.barrier()
    return model_path
