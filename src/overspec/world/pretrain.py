"""Contrastive pretraining of the two tiny open_clip CLIPs (``tiny-s``, ``tiny-m``) on the embedded world.

The recipe follows CLIP (Radford et al. 2021) and open_clip's trainer at toy scale: symmetric InfoNCE with a
learnable temperature, AdamW, linear warm-up then cosine decay, random shifts of a few pixels as augmentation.
Captions that are identical strings within a batch are treated as shared positives (soft targets), since the
caption corpus repeats short phrases such as "the number 7".

Training is deterministic for a given seed on any CPU: it runs on one thread (so no reduction depends on the
machine's core count), torch's global RNG is forked and seeded around model creation, batches and shifts come
from seeded generators, and deterministic algorithms are switched on for the duration. The two sizes train in
two processes side by side when the machine has two cores. The result is an open_clip ``local-dir:`` folder
written atomically::

    <out_dir>/<size>/open_clip_config.json      {"model_cfg": ..., "preprocess_cfg": ...}
    <out_dir>/<size>/open_clip_model.safetensors
    <out_dir>/<size>/training.json              training key, seed, recipe, losses, data hash, weights sha256

A folder whose weights no longer match the sha256 in its ``training.json`` is reported and retrained. Every
``CHECKPOINT_EVERY`` steps a run saves its whole state (weights, optimiser, schedule, batch stream, RNG) beside the
folder, so a run that is killed continues where it stopped and still ends with the uninterrupted run's weights.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import math
import multiprocessing
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from filelock import FileLock
from PIL import Image
from tqdm.auto import tqdm

from overspec.files import atomic_folder, atomic_write_bytes, file_sha256, remove_stale_temporaries
from overspec.world.checks import content_matches
from overspec.world.general import IMAGE_SIZE, caption_corpus, ensure_world, world_hash
from overspec.world.layout import seed_root
from overspec.errors import InputError
from overspec.progress import bar_disabled, stage

__all__ = [
    "PREPROCESS_CFG",
    "TINY_CLIPS",
    "TrainingRecipe",
    "ensure_tiny_clips",
    "pretrain_tiny_clip",
    "register_tiny_configs",
    "tiny_clip_config",
    "training_key",
]

logger = logging.getLogger(__name__)

TINY_CLIPS = ("tiny-s", "tiny-m")
CONFIG_DIR = Path(__file__).resolve().parent / "configs"
PREPROCESS_CFG = {"size": IMAGE_SIZE, "mode": "RGB", "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5],
                  "interpolation": "bicubic", "resize_mode": "shortest", "fill_color": 0}
METADATA = "training.json"
TRAINING_VERSION = 3  # bump when the training loop changes what a recipe produces
_MAX_SHIFT = 2
PARALLEL_MIN_STEPS = 200  # fewer steps in all train faster in this process than in freshly started ones
CHECKPOINT_EVERY = 100  # steps between resumable snapshots (10-20 s of training; saving one takes milliseconds)


@dataclass(frozen=True)
class TrainingRecipe:
    """Optimisation settings of one tiny CLIP (kept beside the code: they are part of what the weights mean)."""

    steps: int
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 0.1
    warmup: int = 40


# About 128k and 80k image-caption pairs (37 and 23 passes over the corpus): tiny ViTs need that many to beat
# chance clearly on shapes and digits; fewer steps leave those two near chance while colours saturate early.
# On one thread of the reference machine both take about 4 minutes, so training them side by side fits the
# 5-minute first-run budget; tiny-m with 1,600 steps scored no better (mean zero-shot 0.592 vs 0.596).
RECIPES = {"tiny-s": TrainingRecipe(steps=2000, lr=3e-3, warmup=100),
           "tiny-m": TrainingRecipe(steps=1250, lr=3e-3, warmup=100)}


def tiny_clip_config(size: str) -> dict:
    """Return the open_clip model config (``embed_dim``, ``vision_cfg``, ``text_cfg``) of ``tiny-s``/``tiny-m``."""
    if size not in TINY_CLIPS:
        raise InputError(f"unknown tiny CLIP {size!r}; expected one of {', '.join(TINY_CLIPS)}")
    return json.loads((CONFIG_DIR / f"{size}.json").read_text(encoding="utf-8"))


def register_tiny_configs() -> None:
    """Make ``tiny-s`` and ``tiny-m`` known to ``open_clip.create_model`` / ``get_tokenizer`` (idempotent)."""
    import open_clip

    known = set(open_clip.list_models())
    for size in TINY_CLIPS:
        if size not in known:
            open_clip.add_model_config(CONFIG_DIR / f"{size}.json")


# ------------------------------------------------------------------------------------------------- data


@dataclass
class _CaptionedImages:
    """Training pairs in memory: uint8 images, tokenised unique captions and, per image, its caption ids."""

    images: torch.Tensor  # (N, 3, H, W) uint8
    tokens: torch.Tensor  # (C, context_length) int64
    captions_of: list[list[int]]


def _load_pairs(world_root: Path, size: str, seed: int) -> _CaptionedImages:
    import open_clip

    pairs = caption_corpus(world_root, seed=seed)
    paths = sorted({path for path, _ in pairs})
    index = {path: i for i, path in enumerate(paths)}
    texts = sorted({text for _, text in pairs})
    text_id = {text: i for i, text in enumerate(texts)}
    captions_of: list[list[int]] = [[] for _ in paths]
    for path, text in pairs:
        captions_of[index[path]].append(text_id[text])
    images = np.stack([np.asarray(Image.open(p).convert("RGB"), dtype=np.uint8) for p in paths])
    tokens = open_clip.get_tokenizer(size)(texts)
    return _CaptionedImages(torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), tokens, captions_of)


class _BatchStream:
    """Seeded batches of (normalised shifted images, caption ids), epoch by epoch without replacement.

    Its state (generator, epoch order, position) is saved with a run's snapshot, so a resumed run draws exactly the
    batches the uninterrupted run would have drawn.
    """

    def __init__(self, data: _CaptionedImages, batch_size: int, seed: int) -> None:
        self.data, self.batch_size = data, batch_size
        self.generator = torch.Generator().manual_seed(seed)
        self.order = torch.randperm(data.images.shape[0], generator=self.generator)
        self.cursor = 0

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the next batch, starting a freshly shuffled epoch when the current one cannot fill it."""
        data = self.data
        if self.cursor + self.batch_size > data.images.shape[0]:
            self.order, self.cursor = torch.randperm(data.images.shape[0], generator=self.generator), 0
        idx = self.order[self.cursor:self.cursor + self.batch_size]
        self.cursor += self.batch_size
        picks = torch.randint(0, 1 << 30, (len(idx),), generator=self.generator)
        caption_ids = torch.tensor([data.captions_of[int(i)][int(p) % len(data.captions_of[int(i)])]
                                    for i, p in zip(idx, picks)])
        return _normalise(_shift(data.images[idx], self.generator)), caption_ids

    def state_dict(self) -> dict:
        """Return what :meth:`load_state_dict` needs to continue the same sequence of batches."""
        return {"generator": self.generator.get_state(), "order": self.order.clone(), "cursor": self.cursor}

    def load_state_dict(self, state: dict) -> None:
        """Continue from a :meth:`state_dict`."""
        self.generator.set_state(state["generator"])
        self.order, self.cursor = state["order"], int(state["cursor"])


def _shift(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Translate each image by up to ``_MAX_SHIFT`` pixels, repeating the border."""
    padded = F.pad(images.float(), (_MAX_SHIFT,) * 4, mode="replicate")
    offsets = torch.randint(0, 2 * _MAX_SHIFT + 1, (images.shape[0], 2), generator=generator)
    h, w = images.shape[-2:]
    rows = (offsets[:, 0, None] + torch.arange(h))[:, None, :, None].expand(-1, images.shape[1], h, padded.shape[-1])
    picked_rows = padded.gather(2, rows)
    cols = (offsets[:, 1, None] + torch.arange(w))[:, None, None, :].expand(-1, images.shape[1], h, w)
    return picked_rows.gather(3, cols)


def _normalise(images: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(PREPROCESS_CFG["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(PREPROCESS_CFG["std"]).view(1, 3, 1, 1)
    return (images / 255.0 - mean) / std


# ------------------------------------------------------------------------------------------------- training


def _contrastive_loss(image_emb: torch.Tensor, text_emb: torch.Tensor, logit_scale: torch.Tensor,
                      caption_ids: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE; pairs whose captions are the same string all count as positives (soft targets)."""
    logits = logit_scale.exp().clamp(max=100.0) * F.normalize(image_emb, dim=-1) @ F.normalize(text_emb, dim=-1).T
    same = (caption_ids[:, None] == caption_ids[None, :]).float()
    targets = same / same.sum(dim=1, keepdim=True)
    return 0.5 * (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets))


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Decay matrices only; gains, biases, embeddings of rank < 2 and the temperature are not decayed."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim < 2 or "logit_scale" in name else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _lr_factor(step: int, warmup: int, steps: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))


@contextlib.contextmanager
def _deterministic(seed: int) -> Iterator[None]:
    """Seed torch's global RNG, use one thread and deterministic kernels, restoring the caller's state afterwards."""
    previous = torch.are_deterministic_algorithms_enabled()
    previous_fill = torch.utils.deterministic.fill_uninitialized_memory
    previous_threads = torch.get_num_threads()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        torch.use_deterministic_algorithms(True)
        torch.set_num_threads(1)
        # NaN-filling every torch.empty costs a third of a CPU step and changes no result of these kernels
        torch.utils.deterministic.fill_uninitialized_memory = False
        try:
            yield
        finally:
            torch.use_deterministic_algorithms(previous)
            torch.set_num_threads(previous_threads)
            torch.utils.deterministic.fill_uninitialized_memory = previous_fill


@contextlib.contextmanager
def _compact_vocabulary(model: torch.nn.Module, tokens: torch.Tensor) -> Iterator[torch.Tensor]:
    """Train only the embedding rows of the tokens in ``tokens``; yield the tokens renumbered into that small table.

    The corpus uses about a hundred of the 49,408 BPE tokens, and a dense gradient plus AdamW update of the full
    table would dominate each CPU step. The renumbering is monotonic, so open_clip's end-of-text pooling (argmax of
    the token id) still finds the same position. On exit the trained rows are written back into the full table.
    """
    used = torch.unique(tokens)
    full = model.token_embedding
    compact = torch.nn.Embedding(len(used), full.embedding_dim)
    with torch.no_grad():
        compact.weight.copy_(full.weight[used])
    model.token_embedding = compact
    try:
        yield torch.searchsorted(used, tokens)
    finally:
        with torch.no_grad():
            full.weight[used] = compact.weight
        model.token_embedding = full


def _train(size: str, data: _CaptionedImages, recipe: TrainingRecipe, seed: int, progress: bool,
           snapshots: _Snapshots | None = None) -> tuple[torch.nn.Module, list[float]]:
    """Build ``size`` from scratch and train it contrastively (continuing from ``snapshots`` when one is there);
    return the model and the per-step losses."""
    import open_clip

    from overspec.models.sources.open_clip import without_random_init_notice

    with without_random_init_notice():
        model = open_clip.create_model(size, pretrained=None)
    logger.info("%s: initialised at random for pretraining", size)
    with _compact_vocabulary(model, data.tokens) as tokens, \
            tqdm(total=recipe.steps, desc=f"pretraining {size}", unit="step", disable=bar_disabled(progress),
                 position=TINY_CLIPS.index(size), leave=False, mininterval=2.0) as bar:
        losses = _optimise(model, replace(data, tokens=tokens), recipe, seed, snapshots=snapshots,
                           on_step=bar.update)
    model.eval()
    return model, losses


def _optimise(model: torch.nn.Module, data: _CaptionedImages, recipe: TrainingRecipe, seed: int, *,
              snapshots: _Snapshots | None = None, on_step: Callable[[int], object] = lambda n: None) -> list[float]:
    """Run the recipe's AdamW steps on ``model`` in place (calling ``on_step(n)`` as ``n`` steps complete); return
    the losses. With ``snapshots``, start from the latest saved state and save one every ``CHECKPOINT_EVERY`` steps.
    """
    model.train()
    optimizer = torch.optim.AdamW(_param_groups(model, recipe.weight_decay), lr=recipe.lr, betas=(0.9, 0.98),
                                  eps=1e-6)
    warmup = min(recipe.warmup, max(1, recipe.steps // 10))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: _lr_factor(s, warmup, recipe.steps))
    stream = _BatchStream(data, min(recipe.batch_size, data.images.shape[0]), seed)
    parts = {"model": model, "optimizer": optimizer, "scheduler": scheduler, "batches": stream}
    losses: list[float] = []
    saved = snapshots.load() if snapshots is not None else None
    if saved is not None:
        for name, part in parts.items():
            part.load_state_dict(saved[name])
        torch.set_rng_state(saved["rng"])
        losses = list(saved["losses"])
        on_step(len(losses))
    for step in range(len(losses), recipe.steps):
        images, caption_ids = stream.next()
        image_emb = model.encode_image(images)
        text_emb = model.encode_text(data.tokens[caption_ids])
        loss = _contrastive_loss(image_emb, text_emb, model.logit_scale, caption_ids)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        losses.append(float(loss.detach()))
        on_step(1)
        if snapshots is not None and (step + 1) % CHECKPOINT_EVERY == 0 and step + 1 < recipe.steps:
            snapshots.save({**{name: part.state_dict() for name, part in parts.items()},
                            "rng": torch.get_rng_state(), "losses": losses})
    return losses


class _Snapshots:
    """The resumable state of one pretraining run, in one file tied to its training key.

    Saved atomically (temporary file, then rename) every ``CHECKPOINT_EVERY`` steps and read back with
    ``torch.load(weights_only=True)``; a snapshot of another key, or one that cannot be read, is discarded with a
    warning and training starts over.
    """

    def __init__(self, path: Path, key: str) -> None:
        self.path, self.key = path, key

    def load(self) -> dict | None:
        """Return the saved state of this key, or None when there is none to continue from."""
        if not self.path.is_file():
            return None
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as exc:  # any unreadable file: the run is retrained, never trusted
            logger.warning("%s: unreadable pretraining snapshot (%s); starting over", self.path, exc)
            self.clear()
            return None
        if not isinstance(state, dict) or state.get("key") != self.key:
            logger.warning("%s: snapshot of another recipe or world; starting over", self.path)
            self.clear()
            return None
        logger.info("%s: continuing pretraining from step %d", self.path, len(state["losses"]))
        return state

    def save(self, state: dict) -> None:
        """Write ``state`` (with this key) atomically."""
        buffer = io.BytesIO()
        torch.save({**state, "key": self.key}, buffer)
        atomic_write_bytes(self.path, buffer.getvalue())

    def clear(self) -> None:
        """Remove the snapshot (after the finished model is in place, or when it is unusable)."""
        self.path.unlink(missing_ok=True)


# ------------------------------------------------------------------------------------------------- writing


def training_key(size: str, recipe: TrainingRecipe, seed: int, data_hash: str) -> str:
    """Return a hash of everything the weights depend on: config, preprocessing, recipe, seed, data, code version.

    It is written into ``training.json``; a folder whose key differs (an older recipe or architecture, such as
    the earlier ResNet towers) is retrained instead of reused.
    """
    payload = {"config": tiny_clip_config(size), "preprocess": PREPROCESS_CFG, "recipe": asdict(recipe),
               "seed": seed, "data": data_hash, "version": TRAINING_VERSION, "max_shift": _MAX_SHIFT}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def _is_trained(folder: Path, key: str) -> bool:
    """Whether ``folder`` holds a complete, intact model trained under ``key`` (altered weights are reported)."""
    weights = folder / "open_clip_model.safetensors"
    if not all((folder / name).is_file() for name in ("open_clip_config.json", weights.name, METADATA)):
        return False
    try:
        metadata = json.loads((folder / METADATA).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        logger.warning("%s: unreadable %s; retraining", folder, METADATA)
        return False
    if metadata.get("key") != key:
        return False
    if not content_matches(weights, metadata.get("weights_sha256"), file_sha256):
        logger.warning("%s: weights do not match the checksum in %s (altered or truncated); retraining",
                       weights, METADATA)
        return False
    return True


def _write_model(folder: Path, size: str, model: torch.nn.Module, metadata: dict) -> None:
    from safetensors.torch import save_file

    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(folder / "open_clip_model.safetensors"))
    metadata = {**metadata, "weights_sha256": file_sha256(folder / "open_clip_model.safetensors")}
    config = {"model_cfg": tiny_clip_config(size), "preprocess_cfg": PREPROCESS_CFG}
    (folder / "open_clip_config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    (folder / METADATA).write_text(json.dumps(metadata, indent=2) + "\n", encoding="utf-8")


def pretrain_tiny_clip(size: str, world_root: Path, out_dir: Path, *, seed: int = 0, steps: int | None = None,
                       batch_size: int | None = None, recipe: TrainingRecipe | None = None,
                       progress: bool = False) -> Path:
    """Train ``tiny-s`` or ``tiny-m`` on the world's caption corpus and return its ``local-dir:`` folder.

    ``world_root`` is what :func:`~overspec.world.general.ensure_world` returned. ``recipe`` replaces the
    size's entry in :data:`RECIPES`; ``steps`` and ``batch_size`` override single settings (short runs in tests).
    If ``<out_dir>/<size>`` already holds a model trained under the same :func:`training_key` it is returned at
    once; otherwise (missing or stale) the folder is built in a temporary folder and swapped in whole. An
    interrupted run leaves ``<out_dir>/.<size>.resume.pt`` behind and the next call continues from it, with the
    same weights as an uninterrupted run.
    """
    if size not in RECIPES:
        raise InputError(f"unknown tiny CLIP {size!r}; expected one of {', '.join(TINY_CLIPS)}")
    final = Path(out_dir) / size
    recipe = recipe or RECIPES[size]
    recipe = replace(recipe, steps=steps or recipe.steps, batch_size=batch_size or recipe.batch_size)
    key = training_key(size, recipe, seed, world_hash(Path(world_root)))
    if _is_trained(final, key):
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(final.parent / f".{size}.lock")):
        if _is_trained(final, key):
            return final
        remove_stale_temporaries(final.parent, size)  # what a killed run left
        register_tiny_configs()
        started = time.perf_counter()
        data = _load_pairs(Path(world_root), size, seed)
        snapshots = _Snapshots(final.parent / f".{size}.resume.pt", key)
        with _deterministic(seed):
            model, losses = _train(size, data, recipe, seed, progress, snapshots)
        metadata = {
            "model": size, "key": key, "seed": seed, "recipe": asdict(recipe),
            "data_hash": world_hash(Path(world_root)),
            "n_images": int(data.images.shape[0]), "n_captions": int(data.tokens.shape[0]),
            "parameters": sum(p.numel() for p in model.parameters()),
            "initial_loss": losses[0], "final_loss": losses[-1], "losses": [round(x, 5) for x in losses],
            "seconds": round(time.perf_counter() - started, 2),
        }
        with atomic_folder(final) as folder:
            _write_model(folder, size, model, metadata)
        snapshots.clear()
        logger.info("pretrained %s in %.1fs: loss %.3f -> %.3f", size, metadata["seconds"], losses[0], losses[-1])
    return final


def ensure_tiny_clips(cache_dir: Path, seed: int = 0, *, world_root: Path | None = None,
                      recipes: dict[str, TrainingRecipe] | None = None, progress: bool = True) -> dict[str, Path]:
    """Return ``{"tiny-s": folder, "tiny-m": folder}``, generating the world and pretraining on first use.

    Without ``world_root`` the world of ``seed`` is generated under ``<cache_dir>`` (in the folder
    :func:`~overspec.world.layout.seed_root` gives, so worlds of different seeds never share one);
    ``recipes`` (default :data:`RECIPES`) says how each size is trained.
    Models still to train are trained in parallel processes (one per size, one thread each) when the machine has
    the cores, which gives the same weights as training them one after the other.
    Load a folder with ``open_clip.create_model_and_transforms("local-dir:" + str(folder))``.
    """
    cache_dir = Path(cache_dir)
    if world_root is None:
        with stage("world: generate the models' training data"):
            world = ensure_world(seed_root(cache_dir, seed), seed)
    else:
        world = Path(world_root)
    out_dir = cache_dir / "tiny-clips" / f"seed-{seed}"
    recipes = recipes or RECIPES
    data_hash = world_hash(world)
    todo = [size for size in TINY_CLIPS
            if not _is_trained(out_dir / size, training_key(size, recipes[size], seed, data_hash))]
    short = sum(recipes[size].steps for size in todo) < PARALLEL_MIN_STEPS  # not worth starting processes
    workers = 1 if short else min(len(todo), os.cpu_count() or 1)
    with stage("pretrain tiny CLIPs"):
        if workers > 1:
            logger.info("pretraining %s in %d processes (first run only, a few minutes)", " and ".join(todo), workers)
            with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
                futures = [pool.submit(pretrain_tiny_clip, size, world, out_dir, seed=seed, recipe=recipes[size],
                                       progress=progress) for size in todo]
                for future in futures:
                    future.result()
        return {size: pretrain_tiny_clip(size, world, out_dir, seed=seed, recipe=recipes[size], progress=progress)
                for size in TINY_CLIPS}
