"""Per-dataset zero-shot accuracy of the tiny CLIPs on the world test splits (helper and script).

Computed independently of overspec's protocols: open_clip loads the ``local-dir:`` folder, the test split is read
straight from the csv files, and the classifier is the CLIP prompt ensemble (mean of L2-normalised template
embeddings per class, renormalised; logits = image . classifier).

Run: ``python tests/world/zero_shot_table.py CACHE_DIR`` (pretrains on first use).
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np
import open_clip
import torch
from PIL import Image

from overspec.world.general import WORLD_DATASETS


def read_split(folder: Path, split: str) -> tuple[list[Path], np.ndarray]:
    """Return image paths and labels of one csv split."""
    with open(folder / f"{split}.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    return [folder / r["path"] for r in rows], np.array([int(r["label"]) for r in rows])


@torch.no_grad()
def zero_shot_accuracy(model_dir: Path, dataset_dir: Path, split: str = "test") -> float:
    """Top-1 zero-shot accuracy of the model in ``model_dir`` on one csv dataset split."""
    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{model_dir}")
    tokenizer = open_clip.get_tokenizer(f"local-dir:{model_dir}")
    model.eval()
    classnames = (dataset_dir / "classnames.txt").read_text(encoding="utf-8").splitlines()
    templates = (dataset_dir / "templates.txt").read_text(encoding="utf-8").splitlines()
    weights = []
    for name in classnames:
        emb = model.encode_text(tokenizer([t.replace("{c}", name) for t in templates]))
        mean = torch.nn.functional.normalize(emb, dim=-1).mean(0)
        weights.append(mean / mean.norm())
    classifier = torch.stack(weights, dim=1)
    paths, labels = read_split(dataset_dir, split)
    images = torch.stack([preprocess(Image.open(p).convert("RGB")) for p in paths])
    features = torch.nn.functional.normalize(model.encode_image(images), dim=-1)
    predictions = (features @ classifier).argmax(dim=1).numpy()
    return float((predictions == labels).mean())


def zero_shot_table(models: dict[str, Path], world_root: Path) -> dict[str, dict[str, float]]:
    """Return ``{dataset: {"chance": 1/K, model: accuracy, ...}}`` over every world dataset."""
    table = {}
    for name, spec in WORLD_DATASETS.items():
        row = {"chance": 1.0 / len(spec.classnames)}
        row.update({m: zero_shot_accuracy(d, Path(world_root) / name) for m, d in models.items()})
        table[name] = row
    return table


if __name__ == "__main__":
    import os
    import time

    from overspec.world.pretrain import ensure_tiny_clips

    torch.set_num_threads(int(os.environ.get("OVERSPEC_THREADS", "2")))
    cache = Path(sys.argv[1])
    started = time.perf_counter()
    folders = ensure_tiny_clips(cache)
    print(f"world + pretraining: {time.perf_counter() - started:.1f}s")
    table = zero_shot_table(folders, cache / "world")
    print(f"{'dataset':18s} {'chance':>7s} " + " ".join(f"{m:>7s}" for m in folders))
    for name, row in table.items():
        print(f"{name:18s} {row['chance']:7.3f} " + " ".join(f"{row[m]:7.3f}" for m in folders))
    means = {m: np.mean([row[m] for row in table.values()]) for m in folders}
    print(f"{'mean':18s} {np.mean([r['chance'] for r in table.values()]):7.3f} "
          + " ".join(f"{means[m]:7.3f}" for m in folders))
