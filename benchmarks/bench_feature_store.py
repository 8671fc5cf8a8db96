"""Feature-store extraction throughput ÷ bare ``encode_image`` on pre-decoded tensors (goal ≥ 0.95).

Both sides run in this process on the same model and images. The store decodes PNG files, preprocesses, encodes
and writes a checksummed cache entry; the baseline only encodes tensors that were decoded and preprocessed
beforehand. Printed per model: images/s of each side and their ratio.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from overspec.data.base import LabelledImages
from overspec.features import FeatureStore
from overspec.models import Encoder, ModelSpec, load_model


def _images_on_disk(folder: Path, n: int, size: int) -> LabelledImages:
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        path = folder / f"{i}.png"
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return LabelledImages("bench", "test", np.zeros(n, np.int64), lambda i: Image.open(paths[i]), identity=[str(p) for p in paths])


def _encoder(architecture: str, cache: Path) -> Encoder:
    """A randomly initialised open_clip model of the given architecture (no weights needed for timing)."""
    torch.manual_seed(0)
    return load_model(ModelSpec(name=architecture, architecture=architecture), cache_dir=cache)


def _bare_throughput(encoder: Encoder, split: LabelledImages, batch_size: int) -> float:
    tensors = torch.stack([encoder.preprocess(split.read(i).convert("RGB")) for i in range(len(split))])
    start = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, len(tensors), batch_size):
            encoder.encode_image(tensors[i:i + batch_size])
    return len(split) / (time.perf_counter() - start)


def _store_throughput(encoder: Encoder, split: LabelledImages, batch_size: int, workers: int, root: Path) -> float:
    store = FeatureStore(root, batch_size=batch_size, num_workers=workers, progress=False)
    start = time.perf_counter()
    store.image_features(encoder, split)
    return len(split) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--models", default="ViT-B-16,ViT-B-32")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--workers", default="0,1", help="comma-separated decoding-worker counts to measure")
    args = parser.parse_args()
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        split = _images_on_disk(tmp, args.images, 256)
        for architecture in args.models.split(","):
            encoder = _encoder(architecture, tmp)
            _bare_throughput(encoder, split, args.batch_size)  # warm-up: allocator, kernels, page cache
            _store_throughput(encoder, split, args.batch_size, 0, tmp / f"warm-up-{architecture}")
            for workers in (int(w) for w in args.workers.split(",")):
                ratios = []
                for round_ in range(args.rounds):  # alternate the two sides so load changes hit both alike
                    bare = _bare_throughput(encoder, split, args.batch_size)
                    root = tmp / f"store-{architecture}-{workers}-{round_}"
                    stored = _store_throughput(encoder, split, args.batch_size, workers, root)
                    ratios.append(stored / bare)
                    print(f"model={architecture} workers={workers} round={round_} bare_img_s={bare:.2f} "
                          f"store_img_s={stored:.2f} ratio={stored / bare:.3f}")
                print(f"model={architecture} workers={workers} median_ratio={float(np.median(ratios)):.3f} "
                      "(goal >= 0.95)")


if __name__ == "__main__":
    main()
