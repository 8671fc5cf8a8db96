"""Shared fixtures: a micro open_clip architecture (built offline, random weights) and tiny image splits."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # tests never touch the network; set before huggingface_hub is imported
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import json
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image

from overspec.data.base import LabelledImages

MICRO_CFG = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 16, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


@pytest.fixture(scope="session")
def micro_config_file(tmp_path_factory) -> Path:
    """An open_clip JSON config named ``micro-clip`` registered with open_clip."""
    path = tmp_path_factory.mktemp("configs") / "micro-clip.json"
    path.write_text(json.dumps(MICRO_CFG))
    open_clip.add_model_config(path)
    return path


@pytest.fixture
def micro_checkpoint(tmp_path, micro_config_file) -> Path:
    """A random micro-clip state dict saved as a plain tensor-only checkpoint."""
    torch.manual_seed(0)
    model = open_clip.create_model("micro-clip", pretrained=None)
    path = tmp_path / "micro.pt"
    torch.save(model.state_dict(), path)
    return path


def make_split(n: int = 12, size: int = 20, seed: int = 0, name: str = "toy") -> LabelledImages:
    """A small in-memory split of random RGB images with 3 classes."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)
    labels = np.arange(n) % 3
    return LabelledImages(name, "test", labels, lambda i: Image.fromarray(pixels[i]), identity=("toy", seed, n),
                          classnames=("red", "green", "blue"), templates=("a photo of {c}.",))


@pytest.fixture
def toy_split() -> LabelledImages:
    return make_split()


COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}


@pytest.fixture
def csv_dataset(tmp_path):
    """A three-class colour dataset in the csv format plus a user catalog entry for it."""
    root = tmp_path / "data" / "colours"
    (root / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    (root / "classnames.txt").write_text("\n".join(COLOURS) + "\n")
    (root / "templates.txt").write_text("a photo of the colour {c}.\n{c}\n")
    for split, n in (("train", 30), ("test", 15)):
        rows = ["path,label"]
        for i in range(n):
            label = i % 3
            base = np.array(list(COLOURS.values())[label], dtype=float)
            pixels = np.clip(base + rng.normal(0, 25, (20, 20, 3)), 0, 255).astype(np.uint8)
            name = f"images/{split}_{i}.png"
            Image.fromarray(pixels).save(root / name)
            rows.append(f"{name},{label}")
        (root / f"{split}.csv").write_text("\n".join(rows) + "\n")
    entry = tmp_path / "colours.yaml"
    entry.write_text(
        "name: test-colours\nformat: csv\nroot: colours\nsplits: {train: train, test: test}\n"
        "classnames: file\ntemplates: file\nlayout: 'classnames.txt, templates.txt, {train,test}.csv'\n"
        "num_classes: 3\n"
    )
    return tmp_path / "data", entry
