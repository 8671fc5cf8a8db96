"""The LoRA fine-tuning loop shared by the three recipes, with exact resume and optional DDP.

What a step does (FRoundation / MADation / FoundPAD trainers, study.md §2–§5): the global batch of the step's
batch plan (:mod:`overspec.finetune.data`) → the adapted image tower → the head's loss (plus the retention terms of
:mod:`overspec.finetune.regularise` when weighted; logged as ``loss_<term>``) → AdamW on two parameter groups
(adapter, head; own learning rates) after clipping each group's gradient norm separately. bf16 autocast is
used on CUDA only. Under ``torchrun`` each rank takes its contiguous slice of the global batch and DDP averages the
gradients (NCCL on GPU, gloo on CPU), so with equal slices a step equals the single-process step up to float
summation order.

Checkpoints (``<out>/checkpoints/step-NNNNNNN/``): ``trainable`` (LoRA + head tensors), ``optimizer`` (AdamW
state) and ``rng`` (torch CPU / CUDA generator states of every rank) as safetensors, and ``state.json`` (step,
config hash, sampler and schedule position, NumPy and Python RNG states, last loss, and the sha256 and size of each
safetensors file). Nothing is pickled. Batches depend on ``(seed, step)`` only, so restoring these gives
bit-identical weights. A checkpoint is written into a process-unique temporary folder (files fsynced, ``state.json``
last) that is then renamed, so a kill leaves either the whole checkpoint or none. Loading verifies it first
(:func:`checkpoint_problem`); resuming skips and removes a corrupt newest checkpoint with a warning and falls back
to the next older valid one (from scratch when none is left).
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import re
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.distributed as dist
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm import tqdm

from overspec import distributed, metrics
from overspec.data.base import LabelledImages
from overspec.data.formats.bin_pairs import BinPairs
from overspec.finetune.data import BalancedBatches, Draw, ShuffledBatches, TrainingImages, training_images
from overspec.finetune.heads import BinaryLinearHead, MarginHead
from overspec.files import atomic_folder, atomic_write_text, file_sha256
from overspec.finetune.recipes import FinetuneConfig, ScheduleSettings
from overspec.finetune.regularise import Regulariser, logged_terms, regulariser_for
from overspec.finetune.train_log import TrainLog
from overspec.models.base import Encoder
from overspec.protocols.verification import evaluate_verification
from overspec.errors import InputError
from overspec.progress import bar_disabled

if TYPE_CHECKING:
    from overspec.finetune.monitor import TrainingMonitor

__all__ = ["Trainer", "TrainResult", "lr_factor", "embed", "VerificationValidator", "AttackValidator",
           "build_head", "latest_checkpoint", "checkpoint_problem", "CheckpointError", "file_record", "file_problem",
           "from_main"]

logger = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
STATE_FILE = "state.json"
CHECKPOINT_FILES = ("trainable.safetensors", "optimizer.safetensors", "rng.safetensors")
_CHECKPOINT_NAME = re.compile(r"step-(\d{7})")


class CheckpointError(RuntimeError):
    """A checkpoint folder is incomplete, truncated, altered or unreadable."""


def lr_factor(schedule: ScheduleSettings, step: int, total: int) -> float:
    """Multiplier of the base learning rate at ``step`` (0-based) of ``total``; see :class:`ScheduleSettings`."""
    if step < schedule.warmup_steps:
        start = schedule.warmup_factor
        return start + (1.0 - start) * step / schedule.warmup_steps
    t = step - schedule.warmup_steps
    if schedule.kind == "constant":
        return 1.0
    if schedule.kind == "step":
        return schedule.gamma ** (t // schedule.period)
    if schedule.kind == "cosine":
        span = max(1, total - schedule.warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(t, span) / span))
    period = schedule.period
    while t >= period:  # SGDR: restart, period grows by period_mult
        t -= period
        period *= schedule.period_mult
    return 0.5 * (1.0 + math.cos(math.pi * t / period))


def _learning_rate(base: float, schedule: ScheduleSettings, step: int, total: int) -> float:
    factor = lr_factor(schedule, step, total)
    if schedule.kind in ("cosine", "cosine_restarts") and step >= schedule.warmup_steps:
        return schedule.min_lr + (base - schedule.min_lr) * factor
    return base * factor


def build_head(config: FinetuneConfig, dim: int, num_classes: int) -> nn.Module:
    """The recipe's head for embeddings of width ``dim``."""
    if config.head.kind == "binary":
        return BinaryLinearHead(dim, loss=config.head.loss)
    return MarginHead(dim, num_classes, kind=config.head.kind, scale=config.head.scale, margin=config.head.margin)


class _Objective(nn.Module):
    """Image tower + head as one module (what DDP wraps): ``forward`` returns the batch loss, the head's plus the
    retention terms of ``regulariser`` when there is one."""

    def __init__(self, backbone: nn.Module, image_fn: Callable[[torch.Tensor], torch.Tensor], head: nn.Module,
                 regulariser: Regulariser | None = None):
        super().__init__()
        self.backbone, self.head = backbone, head
        self._image_fn = image_fn
        self.regulariser = regulariser

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        features = self._image_fn(images)
        loss = self.head.loss(features, labels)
        return loss if self.regulariser is None else loss + self.regulariser(images, features)


@torch.no_grad()
def embed(encoder: Encoder, images: LabelledImages, *, flip: bool = False, batch_size: int = 128,
          device: str = "cpu") -> torch.Tensor:
    """Raw (unnormalised) image embeddings of a split, optionally of its horizontally flipped images."""
    dataset = TrainingImages(images, encoder.preprocess)
    out = []
    for start in range(0, len(dataset), batch_size):
        batch = torch.stack([dataset[(i, flip)][0] for i in range(start, min(start + batch_size, len(dataset)))])
        out.append(encoder.encode_image(batch.to(device)).float().cpu())
    return torch.cat(out)


@dataclass
class VerificationValidator:
    """insightface 10-fold verification accuracy on a pair set (image + flipped image embeddings summed)."""

    pairs: BinPairs
    batch_size: int = 128

    def __call__(self, encoder: Encoder, head: nn.Module, device: str) -> dict:
        images = self.pairs.images_as_dataset()
        emb = embed(encoder, images, batch_size=self.batch_size, device=device).numpy()
        emb_flip = embed(encoder, images, flip=True, batch_size=self.batch_size, device=device).numpy()
        result = evaluate_verification(emb, emb_flip, self.pairs.issame)
        return {"accuracy": result["accuracy"], "set": self.pairs.name}


@dataclass
class AttackValidator:
    """EER of the model's own binary head on a labelled split (1 = bona fide)."""

    split: LabelledImages
    method: str = "bob"
    batch_size: int = 128

    def __post_init__(self) -> None:
        counts = {label: int(np.sum(self.split.labels == label)) for label in (1, 0)}
        if not all(counts.values()):  # refuse before training, not at the first validation
            raise InputError(f"validation split {self.split.dataset}/{self.split.split} has {counts[1]} bona fide and "
                             f"{counts[0]} attack samples; an EER needs both (give a larger dev split)")

    @torch.no_grad()
    def __call__(self, encoder: Encoder, head: nn.Module, device: str) -> dict:
        scores = head.scores(embed(encoder, self.split, batch_size=self.batch_size, device=device).to(device))
        scores = scores.float().cpu().numpy()
        labels = self.split.labels
        result = metrics.eer(scores[labels == 1], scores[labels == 0], method=self.method)
        return {"eer": result.value, "method": self.method, "set": f"{self.split.dataset}/{self.split.split}"}


@dataclass(frozen=True)
class TrainResult:
    """What a finished run produced: the trained head module, the last validation and the per-step losses."""

    head: nn.Module
    validation: dict
    losses: list[float]
    seconds: float
    resumed_from: int
    final_loss: float | None = None


def file_record(path: Path) -> dict:
    """The sha256 and size of a file, as recorded beside it to detect truncation and alteration later."""
    return {"sha256": file_sha256(Path(path)), "size": Path(path).stat().st_size}


def file_problem(path: Path, record: object) -> str | None:
    """Why ``path`` does not match its :func:`file_record` ``record`` (missing, truncated, altered); None if it does."""
    path = Path(path)
    if not isinstance(record, dict) or not {"sha256", "size"} <= record.keys():
        return f"no checksum recorded for {path.name}"
    if not path.is_file():
        return f"{path.name} is missing (incomplete)"
    size = path.stat().st_size
    if size != record["size"]:
        return f"{path.name} has {size} bytes where {record['size']} were written (truncated or altered)"
    if file_record(path)["sha256"] != record["sha256"]:
        return f"{path.name} does not match its recorded sha256 (altered)"
    return None


def _safetensors_problem(path: Path) -> str | None:
    try:
        with safe_open(str(path), framework="pt") as handle:
            handle.keys()
    except Exception as exc:  # safetensors raises its own error types for malformed headers
        return f"{path.name} has a broken safetensors header ({exc})"
    return None


def checkpoint_problem(folder: Path) -> str | None:
    """Why ``folder`` is not a usable checkpoint (unreadable state.json, missing, truncated, altered or unparsable
    files), or None when every file matches the checksums in its ``state.json``."""
    folder = Path(folder)
    try:
        state = json.loads((folder / STATE_FILE).read_text())
    except FileNotFoundError:
        return f"{STATE_FILE} is missing (incomplete)"
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        return f"unreadable {STATE_FILE} ({exc})"
    if not isinstance(state, dict) or not isinstance(state.get("files"), dict):
        return f"{STATE_FILE} records no file checksums"
    match = _CHECKPOINT_NAME.fullmatch(folder.name)
    if match and state.get("step") != int(match.group(1)):
        return f"{STATE_FILE} says step {state.get('step')!r}, the folder name step {int(match.group(1))}"
    for name in CHECKPOINT_FILES:
        problem = file_problem(folder / name, state["files"].get(name)) or _safetensors_problem(folder / name)
        if problem:
            return problem
    return None


def _checkpoint_folders(out_dir: Path) -> list[Path]:
    """Checkpoint folders (temporary ones excluded), newest first."""
    found = [p for p in (Path(out_dir) / CHECKPOINTS).glob("step-*") if _CHECKPOINT_NAME.fullmatch(p.name)]
    return sorted(found, key=lambda p: int(p.name[5:]), reverse=True)


def latest_checkpoint(out_dir: Path) -> Path | None:
    """The newest valid checkpoint under ``<out_dir>/checkpoints`` (None when there is none).

    Newer corrupt checkpoints are reported with a warning naming the folder and the problem, and removed; call it
    on one process only (rank 0 under torch.distributed).
    """
    for folder in _checkpoint_folders(out_dir):
        problem = checkpoint_problem(folder)
        if problem is None:
            return folder
        logger.warning("checkpoint %s is unusable: %s; removing it and falling back to an older one", folder, problem)
        shutil.rmtree(folder, ignore_errors=True)
    return None


def _fsync(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def _save_synced(tensors: dict[str, torch.Tensor], path: Path) -> None:
    save_file(tensors, str(path))
    _fsync(path)


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, entry in state["state"].items():
        for key, value in entry.items():
            if torch.is_tensor(value):
                tensors[f"{index}.{key}"] = value.detach().contiguous().cpu()
            else:
                scalars[f"{index}.{key}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _optimizer_state(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict] = {}
    for name, value in [*tensors.items(), *meta["scalars"].items()]:
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def _rng_snapshot() -> tuple[dict[str, torch.Tensor], dict]:
    tensors = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        tensors.update({f"torch_cuda_{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    plain = {"numpy": [kind, keys.tolist(), pos, has_gauss, gauss],
             "python": [version, list(internal), gauss_next]}
    return tensors, plain


def _restore_rng(tensors: dict[str, torch.Tensor], plain: dict) -> None:
    torch.set_rng_state(tensors["torch_cpu"])
    cuda = [tensors[k] for k in sorted(tensors) if k.startswith("torch_cuda_")]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    kind, keys, pos, has_gauss, gauss = plain["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = plain["python"]
    random.setstate((version, tuple(internal), gauss_next))


def _gather(obj: object) -> list:
    if not distributed.is_distributed():
        return [obj]
    out = [None] * distributed.world_size()
    dist.all_gather_object(out, obj)
    return out


def from_main(value: object) -> object:
    """``value`` as rank 0 computed it, on every rank (a collective: every rank must call it; no-op alone)."""
    if not distributed.is_distributed():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


class Trainer:
    """LoRA + head fine-tuning of an encoder's image tower following a :class:`FinetuneConfig`.

    ``encoder`` must already carry LoRA modules (``overspec.models.lora.inject_lora``); everything else in its
    module is frozen here. ``validator`` (called every ``val_every`` steps and at the end, rank 0) returns a dict
    of metrics. ``monitor`` (a :class:`overspec.finetune.monitor.TrainingMonitor`) adds the general zero-shot
    accuracy at step 0 and beside each validation, and keeps validated states. ``out_dir`` receives
    ``train_log.jsonl`` and ``checkpoints/``.
    """

    def __init__(self, config: FinetuneConfig, encoder: Encoder, train: LabelledImages, out_dir: Path, *,
                 adapter_parameters: list[nn.Parameter], validator: Callable | None = None, device: str = "cpu",
                 progress: bool = True, run_hash: str = "",
                 monitor: TrainingMonitor | None = None) -> None:
        self.config, self.encoder, self.train_set = config, encoder, train
        self.out_dir, self.device, self.progress = Path(out_dir), device, progress
        self.validator, self.run_hash, self.monitor = validator, run_hash, monitor
        self.last_loss: float | None = None
        num_classes = int(train.labels.max()) + 1
        dim = int(embed(encoder, train.subset([0]), device=device).shape[1])
        self.head = build_head(config, dim, num_classes).to(device)
        for param in encoder.module.parameters():
            param.requires_grad_(False)
        self.adapter_parameters = list(adapter_parameters)
        for param in self.adapter_parameters:
            param.requires_grad_(True)
        self.objective = _Objective(encoder.module, encoder.image_fn, self.head,
                                    regulariser_for(config.regularise, encoder, self.adapter_parameters))
        self.optimizer = torch.optim.AdamW(
            [{"params": self.adapter_parameters, "lr": config.optim.lr_adapter, "name": "adapter"},
             {"params": list(self.head.parameters()), "lr": config.optim.lr_head, "name": "head"}],
            betas=config.optim.betas, weight_decay=config.optim.weight_decay)
        plan_cls = BalancedBatches if config.balanced else ShuffledBatches
        self.plan = plan_cls(train.labels, config.batch_size, seed=config.seed)
        self.dataset = training_images(train, config.train_transform, encoder, seed=config.seed)
        world = distributed.world_size()
        if config.batch_size % world:
            raise InputError(f"batch_size {config.batch_size} is not divisible by the {world} ranks")

    # -------------------------------------------------------------------------------- checkpoints

    def _trainable_state(self) -> dict[str, torch.Tensor]:
        state = {f"adapter.{i}": p.detach().contiguous().cpu() for i, p in enumerate(self.adapter_parameters)}
        state.update({f"head.{k}": v.detach().contiguous().cpu() for k, v in self.head.state_dict().items()})
        return state

    def _load_trainable(self, state: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            for i, param in enumerate(self.adapter_parameters):
                param.copy_(state[f"adapter.{i}"])
        self.head.load_state_dict({k[5:]: v for k, v in state.items() if k.startswith("head.")})

    def restore_trainable(self, state: dict[str, torch.Tensor]) -> None:
        """Set the adapter and head to a trainable state (e.g. a validated step's, kept by the monitor)."""
        self._load_trainable(state)

    def save_checkpoint(self, step: int) -> Path | None:
        """Write the full training state after ``step`` steps (rank 0 writes; every rank gives its RNG states).

        The files go to a temporary folder (:func:`overspec.files.atomic_folder`; fsynced, ``state.json`` with
        their checksums last) swapped in whole: readers never see a partial checkpoint and concurrent writers never
        share a temporary name.
        """
        rng_tensors, rng_plain = _rng_snapshot()
        all_tensors, all_plain = _gather(rng_tensors), _gather(rng_plain)
        if not distributed.is_main():
            return None
        final = self.out_dir / CHECKPOINTS / f"step-{step:07d}"
        with atomic_folder(final) as tmp:
            self._write_checkpoint(tmp, step, all_tensors, all_plain)
        return final

    def _write_checkpoint(self, folder: Path, step: int, all_tensors: list[dict[str, torch.Tensor]],
                          all_plain: list[dict]) -> None:
        """Write the checkpoint files of step ``step`` into ``folder``, ``state.json`` (with checksums) last."""
        opt_tensors, opt_meta = _optimizer_tensors(self.optimizer)
        contents = {"trainable.safetensors": self._trainable_state(), "optimizer.safetensors": opt_tensors,
                    "rng.safetensors": {f"rank{r}.{k}": v.contiguous()
                                        for r, t in enumerate(all_tensors) for k, v in t.items()}}
        for name, tensors in contents.items():
            _save_synced(tensors, folder / name)
        state = {"step": step, "run_hash": self.run_hash, "world_size": distributed.world_size(),
                 "optimizer": opt_meta, "rng": all_plain, "last_loss": self.last_loss,
                 "sampler": {"kind": type(self.plan).__name__, "seed": self.config.seed, "next_step": step},
                 "schedule": {"kind": self.config.schedule.kind, "next_step": step},
                 "files": {name: file_record(folder / name) for name in contents}}
        atomic_write_text(folder / STATE_FILE, json.dumps(state))

    def load_checkpoint(self, folder: Path) -> int:
        """Verify, then restore everything :meth:`save_checkpoint` wrote; return the step to continue from.

        Raises :class:`CheckpointError` (nothing restored) when the folder fails :func:`checkpoint_problem`.
        """
        folder = Path(folder)
        problem = checkpoint_problem(folder)
        if problem:
            raise CheckpointError(f"checkpoint {folder}: {problem}")
        state = json.loads((folder / STATE_FILE).read_text())
        if self.run_hash and state.get("run_hash") not in ("", self.run_hash):
            raise InputError(f"{folder}: checkpoint of a different run (config hash {state.get('run_hash')}, "
                             f"this run {self.run_hash}); use a new output folder")
        if state["world_size"] != distributed.world_size():
            raise InputError(f"{folder}: saved with {state['world_size']} ranks, resumed with "
                             f"{distributed.world_size()}: exact resume needs the same number")
        self._load_trainable(load_file(str(folder / "trainable.safetensors")))
        self.optimizer.load_state_dict(_optimizer_state(load_file(str(folder / "optimizer.safetensors")),
                                                        state["optimizer"]))
        rank = distributed.rank()
        rng = load_file(str(folder / "rng.safetensors"))
        prefix = f"rank{rank}."
        _restore_rng({k[len(prefix):]: v for k, v in rng.items() if k.startswith(prefix)}, state["rng"][rank])
        self.last_loss = state.get("last_loss")
        return int(state["step"])

    def _resume_step(self, resume: bool) -> int:
        """Restore the newest valid checkpoint (chosen, and corrupt ones pruned, by rank 0); the step to start at."""
        if not resume:
            return 0
        folder = from_main(latest_checkpoint(self.out_dir) if distributed.is_main() else None)
        if folder is None:
            return 0
        step = self.load_checkpoint(folder)
        logger.info("resuming from %s (step %d)", folder, step)
        return step

    # -------------------------------------------------------------------------------- training

    def _local_keys(self, step: int) -> list[Draw]:
        keys = self.plan.batch(step)
        per = len(keys) // distributed.world_size()
        rank = distributed.rank()
        return keys[rank * per:(rank + 1) * per]

    def _loader(self, start: int) -> torch.utils.data.DataLoader:
        steps = [self._local_keys(step) for step in range(start, self.config.steps)]
        # an own generator: creating the loader's iterator must not draw from the global RNG (exact resume)
        generator = torch.Generator().manual_seed(self.config.seed + start)
        return torch.utils.data.DataLoader(self.dataset, batch_sampler=steps, num_workers=self.config.num_workers,
                                           generator=generator)

    def _set_learning_rates(self, step: int) -> dict[str, float]:
        bases = {"adapter": self.config.optim.lr_adapter, "head": self.config.optim.lr_head}
        rates = {}
        for group in self.optimizer.param_groups:
            group["lr"] = _learning_rate(bases[group["name"]], self.config.schedule, step, self.config.steps)
            rates[f"lr_{group['name']}"] = group["lr"]
        return rates

    def _autocast(self):
        if self.config.bf16 and self.device.startswith("cuda"):
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return nullcontext()

    def train_step(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
        """One optimisation step on a local batch; returns the loss averaged over ranks."""
        self.optimizer.zero_grad(set_to_none=True)
        with self._autocast():
            loss = model(images.to(self.device, non_blocking=True), labels.to(self.device, non_blocking=True))
        loss.backward()
        if self.config.optim.grad_clip > 0:
            for group in self.optimizer.param_groups:
                torch.nn.utils.clip_grad_norm_(group["params"], self.config.optim.grad_clip)
        self.optimizer.step()
        value = loss.detach().float()
        if distributed.is_distributed():
            dist.all_reduce(value)
            value /= distributed.world_size()
        return float(value)

    @contextmanager
    def _evaluating(self) -> Iterator[None]:
        """Eval mode for the duration, then back to train mode."""
        self.encoder.module.eval()
        self.head.eval()
        try:
            yield
        finally:
            self.encoder.module.train()
            self.head.train()

    def validate(self) -> dict:
        """Run the validator on rank 0 (in eval mode, then back to train mode); empty without a validator."""
        if self.validator is None or not distributed.is_main():
            return {}
        with self._evaluating():
            return self.validator(self.encoder, self.head, self.device)

    def _monitored(self) -> dict:
        """The monitor's general record of the model as it is now, under ``monitor`` (rank 0; empty without one)."""
        if self.monitor is None or not distributed.is_main():
            return {}
        with self._evaluating():
            general = self.monitor.measure(self.encoder, self.device)
        return {"monitor": general} if general else {}

    def _validation_record(self, step: int) -> dict:
        """The log record of the validation after ``step`` steps: biometric metric, monitor, kept state."""
        record = {"step": step, "validation": self.validate(), **self._monitored()}
        if self.monitor is not None and distributed.is_main():
            kept = self.monitor.keep(step, self._trainable_state())
            record.update({"kept": kept} if kept else {})
        return record

    def fit(self, *, resume: bool = True) -> TrainResult:
        """Train to ``config.steps`` (continuing from the newest checkpoint when ``resume``)."""
        started = time.perf_counter()
        start = self._resume_step(resume)
        logs = TrainLog(self.out_dir, start, self.config.steps, distributed.is_main())
        model: nn.Module = self.objective
        if distributed.is_distributed():
            model = nn.parallel.DistributedDataParallel(
                self.objective, device_ids=[torch.device(self.device).index] if self.device.startswith("cuda")
                else None)
        self.encoder.module.train()
        self.head.train()
        losses, validation, shown = [], {}, {}
        if start == 0 and (base := self._monitored()):
            logs.write({"step": 0, **base})
            shown = self.monitor.postfix(base)
        bar = tqdm(total=self.config.steps, initial=start, desc=f"finetune {self.config.recipe}",
                   disable=bar_disabled(self.progress and distributed.is_main()), dynamic_ncols=True)
        for step, (images, labels) in enumerate(self._loader(start), start=start):
            rates = self._set_learning_rates(step)
            loss = self.train_step(model, images, labels)
            losses.append(loss)
            self.last_loss = loss
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}", **shown)
            done = step + 1
            if self.config.log_every and (done % self.config.log_every == 0 or done == self.config.steps):
                logs.write({"step": done, "loss": loss, **logged_terms(self.objective.regulariser), **rates,
                            "seconds": time.perf_counter() - started})
            if self.config.val_every and done % self.config.val_every == 0 and done != self.config.steps:
                record = self._validation_record(done)
                validation = record["validation"]
                logs.write(record)
                shown = self.monitor.postfix(record) if self.monitor is not None else shown
            if self.config.checkpoint_every and done % self.config.checkpoint_every == 0:
                self.save_checkpoint(done)
            distributed.barrier()
        bar.close()
        record = self._validation_record(self.config.steps)
        validation = record["validation"]
        if validation or "monitor" in record:
            logs.write(record)
        logs.close()
        self.encoder.module.eval()
        self.head.eval()
        return TrainResult(self.head, validation, losses, time.perf_counter() - started, start, self.last_loss)
