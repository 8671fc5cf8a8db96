"""Feature-store extraction throughput ÷ a bare DataLoader + ``encode_image`` loop on realistic JPEGs (goal ≥ 0.95).

Images: photo-sized JPEGs (500 × 375, PIL quality 90, like VOC / ImageNet validation images) of smooth colour
gradients, overlapping shapes and sensor-like noise, so decoding costs what a photograph's does. Model: open_clip
ViT-B/16 and ViT-B/32 with random weights (no download; the cost of a forward pass does not depend on the weights).
overspec's side is what the runner runs: ``FeatureStore.image_features`` with the runner's defaults (batch 128,
no decoding workers), which decodes, preprocesses, encodes and writes a checksummed cache entry. The bare side is
what a user writes: a ``torch.utils.data.DataLoader`` over the same files (PIL open, RGB, the model's own
``preprocess``) with the same batch size and worker count, ``model.encode_image`` per batch under
``torch.inference_mode``. Rounds alternate which side goes first; the median of the per-round ratios is the result,
and the two sides' features are checked to agree.

Run: ``.venv/bin/python benchmarks/bench_feature_store.py`` (about 4 minutes on 2 idle cores: 128 images, one
runner-sized batch); ``--images 512 --rounds 5`` for several batches (decoding then overlaps encoding in the store)
and steadier numbers, ``--workers 2`` to measure with decoding workers, ``--models ViT-B-32`` for one model.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter

from overspec.config.run import RunConfig
from overspec.data.base import LabelledImages
from overspec.features import FeatureStore
from overspec.models import Encoder, ModelSpec, load_model

GOAL = 0.95


def photo_like(rng: np.random.Generator, width: int = 500, height: int = 375) -> Image.Image:
    """A natural-image-like RGB picture: smooth colour gradient, blurred shapes, fine texture, sensor grain."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    corners = rng.uniform(0, 255, size=(4, 3)).astype(np.float32)
    u, v = (x / width)[..., None], (y / height)[..., None]
    base = (1 - u) * (1 - v) * corners[0] + u * (1 - v) * corners[1] + (1 - u) * v * corners[2] + u * v * corners[3]
    image = Image.fromarray(base.astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(6, 14))):
        box = np.sort(rng.uniform(0, 1, 2) * width), np.sort(rng.uniform(0, 1, 2) * height)
        shape = [float(box[0][0]), float(box[1][0]), float(box[0][1]), float(box[1][1])]
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(shape, fill=colour)
    image = image.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.5, 2.0))))
    texture = rng.standard_normal((height // 4, width // 4), dtype=np.float32)
    texture = np.asarray(Image.fromarray(texture).resize((width, height), Image.Resampling.BICUBIC))[..., None]
    grain = rng.standard_normal((height, width, 3), dtype=np.float32)
    noisy = np.asarray(image, np.float32) + 12.0 * texture + 5.0 * grain
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


def jpegs_on_disk(folder: Path, n: int) -> list[Path]:
    """Write ``n`` photo-like JPEGs (quality 90) and return their paths."""
    rng = np.random.default_rng(0)
    paths = [folder / f"{i:05d}.jpg" for i in range(n)]
    for path in paths:
        photo_like(rng).save(path, quality=90)
    return paths


def store_split(paths: list[Path]) -> LabelledImages:
    """The files as the runner's datasets present them: lazily opened by path, one label each."""
    return LabelledImages("bench", "test", np.zeros(len(paths), np.int64), lambda i: Image.open(paths[i]),
                          identity=[p.name for p in paths], locate=lambda i: str(paths[i]))


class Files(torch.utils.data.Dataset):
    """The user's dataset: open a file, convert to RGB, apply the model's preprocessing."""

    def __init__(self, paths: list[Path], preprocess) -> None:
        self.paths, self.preprocess = paths, preprocess

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor:
        with Image.open(self.paths[index]) as image:
            return self.preprocess(image.convert("RGB"))


def bare_features(encoder: Encoder, paths: list[Path], batch_size: int, workers: int) -> np.ndarray:
    """DataLoader + ``encode_image`` per batch, as a user writes it."""
    loader = torch.utils.data.DataLoader(Files(paths, encoder.preprocess), batch_size=batch_size,
                                         num_workers=workers, shuffle=False)
    with torch.inference_mode():
        return np.concatenate([encoder.encode_image(batch).float().numpy() for batch in loader])


def store_features(encoder: Encoder, split: LabelledImages, batch_size: int, workers: int, root: Path) -> np.ndarray:
    """overspec's extraction into a fresh cache folder (nothing cached yet), as the runner calls it."""
    store = FeatureStore(root, batch_size=batch_size, num_workers=workers, progress=False)
    return store.image_features(encoder, split).x


def encoder_for(architecture: str, cache: Path) -> Encoder:
    """A randomly initialised open_clip model of the given architecture (no weights needed for timing)."""
    torch.manual_seed(0)
    return load_model(ModelSpec(name=architecture, architecture=architecture), cache_dir=cache)


def _timed(function, *args) -> tuple[float, np.ndarray]:
    start = time.perf_counter()
    result = function(*args)
    return time.perf_counter() - start, result


def bench_architecture(architecture: str, paths: list[Path], args: argparse.Namespace, tmp: Path) -> None:
    """Interleaved rounds of both sides on one model; print per-round throughputs, the median ratio, the goal."""
    encoder = encoder_for(architecture, tmp / "models")
    split = store_split(paths)
    bare_features(encoder, paths[:4], 4, 0)  # warm-up: allocator, kernels, page cache of the model
    ratios = []
    for round_ in range(args.rounds):
        root = tmp / f"store-{architecture}-{round_}"
        sides = [("bare", lambda: bare_features(encoder, paths, args.batch_size, args.workers)),
                 ("store", lambda: store_features(encoder, split, args.batch_size, args.workers, root))]
        seconds, features = {}, {}
        for name, run in sides if round_ % 2 == 0 else sides[::-1]:
            seconds[name], features[name] = _timed(run)
        scale = float(np.abs(features["bare"]).max())
        assert np.allclose(features["store"], features["bare"], rtol=0, atol=1e-4 * scale), "features differ"
        ratios.append(seconds["bare"] / seconds["store"])
        print(f"{architecture} round {round_}: bare {len(paths) / seconds['bare']:6.2f} img/s, store "
              f"{len(paths) / seconds['store']:6.2f} img/s, ratio {ratios[-1]:.3f}", flush=True)
    ratio = float(np.median(ratios))
    print(f"{architecture}: median throughput ratio store / bare {ratio:.3f} over {args.rounds} rounds "
          f"({len(paths)} JPEGs 500x375, batch {args.batch_size}, {args.workers} workers, "
          f"{torch.get_num_threads()} threads)")
    verdict = "met" if ratio >= GOAL else "NOT met"
    print(f"goal: extraction on realistic JPEGs / bare encode_image loop, {architecture}: {ratio:.3f} >= {GOAL}: "
          f"{verdict}")


def main() -> None:
    defaults = RunConfig.__dataclass_fields__
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=128, help="JPEGs per round and side (default: one batch)")
    parser.add_argument("--batch-size", type=int, default=defaults["batch_size"].default)
    parser.add_argument("--workers", type=int, default=defaults["num_workers"].default)
    parser.add_argument("--models", default="ViT-B-16,ViT-B-32")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (both sides)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "images").mkdir()
        paths = jpegs_on_disk(tmp / "images", args.images)
        megabytes = sum(p.stat().st_size for p in paths) / 1e6
        print(f"{len(paths)} JPEGs, {megabytes / len(paths) * 1e3:.0f} kB each on average")
        for architecture in args.models.split(","):
            bench_architecture(architecture, paths, args, tmp)


if __name__ == "__main__":
    main()
