"""Toy training sets and configs shared by the fine-tuning tests and their spawned DDP workers."""

from __future__ import annotations

import numpy as np
from PIL import Image

from overspec.data.base import LabelledImages
from overspec.finetune.recipes import load_recipe


def attack_split(n: int = 24, seed: int = 0, split: str = "train") -> LabelledImages:
    """Bona fide (label 1) images have a bright left half; attacks are noise."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(n, 16, 16, 3), dtype=np.uint8)
    labels = np.arange(n) % 2
    pixels[labels == 1, :, :8] = 230
    subjects = np.array([f"s{i // 2}" for i in range(n)], dtype=object)
    return LabelledImages("toy-attack", split, labels, lambda i: Image.fromarray(pixels[i]), ("toy-attack", seed, n),
                          info={"subject_id": subjects})


def identity_split(identities: int = 4, per: int = 4, seed: int = 0) -> LabelledImages:
    """Each identity is a colour plus noise."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(identities), per)
    colours = rng.integers(0, 256, size=(identities, 3))
    pixels = np.clip(colours[labels][:, None, None, :] + rng.normal(0, 20, (len(labels), 16, 16, 3)), 0, 255)
    pixels = pixels.astype(np.uint8)
    return LabelledImages("toy-ids", "train", labels, lambda i: Image.fromarray(pixels[i]), ("toy-ids", seed))


#: The published training transforms resized for the micro model's 16 px input (FoundPAD keeps a random crop).
TOY_SIZES = {"froundation": {"train_transform.resize": 16}, "madation": {"train_transform.resize": 16},
             "foundpad": {"train_transform.resize": 18, "train_transform.crop": 16}}


def toy_config(recipe: str = "froundation", **overrides):
    """A recipe scaled to a few steps on the micro model, with its published augmentations at 16 px (val off, no
    checkpoints unless asked)."""
    values = {"steps": 4, "batch_size": 8, "val_every": 0, "checkpoint_every": 0, "log_every": 1,
              "lora.rank": 2, "lora.alpha": 4.0, "lora.dropout": 0.0, "optim.lr_adapter": 1e-2,
              "optim.lr_head": 1e-2, **TOY_SIZES.get(recipe, {}), **overrides}
    return load_recipe(recipe, overrides=tuple(f"{k}={v}" for k, v in values.items()))
