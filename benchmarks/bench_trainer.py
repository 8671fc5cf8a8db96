"""Fine-tuning trainer throughput ÷ a bare PyTorch loop (goal ≥ 0.95), and peak memory of LoRA vs full fine-tuning.

Both loops train the same tiny ViT CLIP (embed 64, 3 layers of width 64, 32 px, patch 4; random weights:
throughput does not depend on the weights) with the same LoRA adapters, CosFace head, batch, AdamW groups and per-group gradient clipping, on the
same in-memory images decoded and preprocessed per step. The trainer adds its batch plan, DataLoader, learning-rate
schedule and JSONL logging. Memory is the peak resident set size (``ru_maxrss``) of a fresh child process per
mode, and its growth over the level reached after building the model (tracemalloc does not see torch's CPU
allocator, so RSS is used).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import open_clip
import torch
from PIL import Image

from overspec.data.base import LabelledImages
from overspec.finetune.data import ShuffledBatches, TrainingImages
from overspec.finetune.recipes import load_recipe
from overspec.finetune.trainer import Trainer, build_head
from overspec.models.base import Encoder
from overspec.models.lora import LoraConfig, inject_lora, lora_parameters
from overspec.models.preprocess import build_transform
from overspec.config.model import PreprocessSpec


def _images(n: int, identities: int, size: int = 32) -> LabelledImages:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    labels = np.arange(n) % identities
    return LabelledImages("bench", "train", labels, lambda i: Image.fromarray(pixels[i]), ("bench", n))


BENCH_VIT = {"embed_dim": 64, "vision_cfg": {"image_size": 32, "layers": 3, "width": 64, "head_width": 32,
                                              "mlp_ratio": 2.0, "patch_size": 4},
             "text_cfg": {"context_length": 24, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2}}


def _encoder() -> Encoder:
    if "bench-vit" not in open_clip.list_models():
        folder = Path(tempfile.mkdtemp())
        (folder / "bench-vit.json").write_text(json.dumps(BENCH_VIT))
        open_clip.add_model_config(folder / "bench-vit.json")
    torch.manual_seed(0)
    model = open_clip.create_model("bench-vit")
    model.eval()
    return Encoder("bench-vit", model, build_transform(PreprocessSpec(size=32, mean=(0.5,) * 3, std=(0.5,) * 3)),
                   model.encode_image, "bench", image_prefixes=("visual.",))


def _config(steps: int, batch: int):
    return load_recipe("froundation", profile="world", overrides=(
        f"steps={steps}", f"batch_size={batch}", "val_every=0", "checkpoint_every=0", "log_every=10"))


def trainer_seconds(steps: int, batch: int, data: LabelledImages) -> float:
    """Wall time of ``Trainer.fit`` for ``steps`` steps (setup excluded)."""
    encoder = _encoder()
    config = _config(steps, batch)
    inject_lora(encoder.module, LoraConfig(rank=config.lora.rank, alpha=config.lora.alpha, rslora=True))
    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer(config, encoder, data, Path(out), adapter_parameters=lora_parameters(encoder.module),
                          progress=False)
        start = time.perf_counter()
        trainer.fit(resume=False)
        return time.perf_counter() - start


def bare_seconds(steps: int, batch: int, data: LabelledImages, *, full: bool = False) -> float:
    """Wall time of a plain loop doing the same maths (LoRA, or every visual weight when ``full``)."""
    encoder = _encoder()
    config = _config(steps, batch)
    if full:
        params = [p for n, p in encoder.module.named_parameters() if n.startswith("visual.")]
        for p in encoder.module.parameters():
            p.requires_grad_(False)
        for p in params:
            p.requires_grad_(True)
    else:
        inject_lora(encoder.module, LoraConfig(rank=config.lora.rank, alpha=config.lora.alpha, rslora=True))
        params = lora_parameters(encoder.module)
    head = build_head(config, 64, int(data.labels.max()) + 1)
    optimizer = torch.optim.AdamW([{"params": params, "lr": config.optim.lr_adapter},
                                   {"params": list(head.parameters()), "lr": config.optim.lr_head}],
                                  weight_decay=config.optim.weight_decay)
    plan = ShuffledBatches(data.labels, batch, seed=0)
    dataset = TrainingImages(data, encoder.preprocess)
    encoder.module.train()
    start = time.perf_counter()
    for step in range(steps):
        items = [dataset[key] for key in plan.batch(step)]
        images = torch.stack([x for x, _ in items])
        labels = torch.tensor([y for _, y in items])
        optimizer.zero_grad(set_to_none=True)
        loss = head.loss(encoder.module.encode_image(images), labels)
        loss.backward()
        for group in optimizer.param_groups:
            torch.nn.utils.clip_grad_norm_(group["params"], 5.0)
        optimizer.step()
    return time.perf_counter() - start


def _memory_child(mode: str, steps: int, batch: int, queue) -> None:
    data = _images(512, 16)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    bare_seconds(steps, batch, data, full=(mode == "full"))
    queue.put((mode, before, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 keeps timings stable on busy hosts)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = _images(512, 16)
    trainer_seconds(3, args.batch, data)  # warm-up (allocator, thread pools)
    ratios = []
    for repeat in range(args.repeats):  # alternate the order so drifting machine load hits both sides
        if repeat % 2:
            ours, bare = trainer_seconds(args.steps, args.batch, data), bare_seconds(args.steps, args.batch, data)
        else:
            bare, ours = bare_seconds(args.steps, args.batch, data), trainer_seconds(args.steps, args.batch, data)
        ratios.append(bare / ours)
        print(f"bare loop {args.steps / bare:7.2f} steps/s   trainer {args.steps / ours:7.2f} steps/s   "
              f"ratio {bare / ours:.3f}")
    ratio = float(np.median(ratios))
    print(f"throughput ratio trainer / bare (median of {args.repeats}): {ratio:.3f}")
    print(f"goal: fine-tuning trainer / bare loop throughput: {ratio:.3f} >= 0.95: {'met' if ratio >= 0.95 else 'NOT met'}")
    context = mp.get_context("spawn")
    queue = context.Queue()
    for mode in ("lora", "full"):
        child = context.Process(target=_memory_child, args=(mode, 10, args.batch, queue))
        child.start()
        child.join()
        name, before, peak = queue.get()
        print(f"{name:5s} fine-tuning: peak RSS {peak / 1024:7.1f} MiB, growth during training "
              f"{(peak - before) / 1024:6.1f} MiB (ru_maxrss)")


if __name__ == "__main__":
    main()
