"""The embedded general-vision world: small labelled image datasets rendered from a seed, plus a caption corpus.

Each dataset fixes one attribute of a simple scene as the label (shape, colour, pattern, object count, position,
handwritten digit) and draws every other attribute (size, colours, background, rotation, noise, position) at
random, so the tasks need more than one pixel statistic and a fitted probe has room to beat zero-shot. Images
are 32x32 RGB PNGs in the ``csv`` format (``classnames.txt``, ``templates.txt``, ``<split>.csv`` with
``path,label``). The handwritten digits are scikit-learn's real ``load_digits`` scans (UCI optdigits).

Generation is a pure function of the seed (one numpy ``Generator`` per dataset and split, no global state).
A dataset folder is built in a temporary folder swapped in whole (:func:`overspec.files.atomic_folder`) and holds
``COMPLETE.json`` with the seed, generator version and a content hash; :func:`ensure_world` is a no-op while those match.

The caption corpus (:func:`caption_corpus`) describes TRAIN images only, from attributes written beside the
train split (``train_attributes.jsonl``); it is what the tiny CLIPs of :mod:`overspec.world.pretrain`
learn the class names from.
"""

from __future__ import annotations

import colorsys
import csv
import hashlib
import io
import json
import logging
import math
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from filelock import FileLock
from PIL import Image, ImageDraw

from overspec.files import atomic_folder, remove_stale_temporaries
from overspec.world.checks import content_matches
from overspec.errors import InputError

__all__ = [
    "IMAGE_SIZE",
    "WORLD_DATASETS",
    "WorldDataset",
    "caption_corpus",
    "ensure_world",
    "world_hash",
]

logger = logging.getLogger(__name__)

IMAGE_SIZE = 32
GENERATOR_VERSION = 3
MARKER = "COMPLETE.json"
ATTRIBUTES = "train_attributes.jsonl"
_SUPERSAMPLE = 4
_CANVAS = IMAGE_SIZE * _SUPERSAMPLE

SHAPES = ("circle", "square", "triangle", "diamond", "star", "cross")
# name -> (hue in degrees, saturation range, value range); hues are jittered by up to 10 degrees per image.
COLOURS = {
    "red": (0.0, (0.75, 1.0), (0.7, 1.0)),
    "orange": (28.0, (0.8, 1.0), (0.85, 1.0)),
    "yellow": (56.0, (0.75, 1.0), (0.85, 1.0)),
    "green": (125.0, (0.65, 1.0), (0.55, 0.95)),
    "blue": (222.0, (0.7, 1.0), (0.7, 1.0)),
    "purple": (278.0, (0.55, 0.9), (0.55, 0.9)),
    "pink": (328.0, (0.3, 0.55), (0.9, 1.0)),
}
PATTERNS = ("horizontal stripes", "vertical stripes", "diagonal stripes", "polka dots", "checkerboard", "grid")
COUNT_WORDS = ("one", "two", "three", "four", "five")
POSITIONS = {  # name -> centre as a fraction of the image side
    "top left": (0.27, 0.27),
    "top right": (0.73, 0.27),
    "bottom left": (0.27, 0.73),
    "bottom right": (0.73, 0.73),
    "center": (0.5, 0.5),
}
DIGITS = tuple(str(d) for d in range(10))


Triple = tuple[Image.Image, int, dict]
Sampler = Callable[[np.random.Generator, int], tuple[Image.Image, dict]]


@dataclass(frozen=True)
class WorldDataset:
    """One world dataset: its folder name, class names, prompt templates, split maker and split sizes."""

    name: str
    classnames: tuple[str, ...]
    templates: tuple[str, ...]
    make_split: Callable[[WorldDataset, np.random.Generator, int, str], list[Triple]]
    n_train: int = 500
    n_test: int = 200


# --------------------------------------------------------------------------------------------- rendering helpers


def _rgb(hue: float, sat: float, val: float) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb((hue % 360.0) / 360.0, sat, val)
    return int(round(r * 255)), int(round(g * 255)), int(round(b * 255))


def _named_colour(rng: np.random.Generator, name: str) -> tuple[int, int, int]:
    hue, (s0, s1), (v0, v1) = COLOURS[name]
    return _rgb(hue + rng.uniform(-10, 10), rng.uniform(s0, s1), rng.uniform(v0, v1))


def _background(rng: np.random.Generator) -> tuple[tuple[int, int, int], str]:
    """Return a dark or light low-saturation background colour and its tone word."""
    if rng.random() < 0.5:
        return _rgb(rng.uniform(0, 360), rng.uniform(0, 0.4), rng.uniform(0.04, 0.3)), "dark"
    return _rgb(rng.uniform(0, 360), rng.uniform(0, 0.2), rng.uniform(0.72, 0.95)), "light"


def _polygon(shape: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    """Return the vertices of ``shape`` centred at ``(cx, cy)`` with outer radius ``r``, rotated by ``angle``."""
    if shape == "square":
        pts = [(r * math.cos(math.pi / 4 + k * math.pi / 2), r * math.sin(math.pi / 4 + k * math.pi / 2))
               for k in range(4)]
    elif shape == "diamond":
        pts = [(r * math.cos(k * math.pi / 2), r * 1.15 * math.sin(k * math.pi / 2)) for k in range(4)]
    elif shape == "triangle":
        pts = [(r * math.cos(-math.pi / 2 + k * 2 * math.pi / 3), r * math.sin(-math.pi / 2 + k * 2 * math.pi / 3))
               for k in range(3)]
    elif shape == "star":
        pts = [((r if k % 2 == 0 else 0.42 * r) * math.cos(-math.pi / 2 + k * math.pi / 5),
                (r if k % 2 == 0 else 0.42 * r) * math.sin(-math.pi / 2 + k * math.pi / 5)) for k in range(10)]
    elif shape == "cross":
        a, b = r, 0.34 * r
        pts = [(-b, -a), (b, -a), (b, -b), (a, -b), (a, b), (b, b), (b, a), (-b, a), (-b, b), (-a, b), (-a, -b),
               (-b, -b)]
    else:
        raise InputError(f"unknown shape {shape!r}")
    c, s = math.cos(angle), math.sin(angle)
    return [(cx + x * c - y * s, cy + x * s + y * c) for x, y in pts]


def _draw_shape(draw: ImageDraw.ImageDraw, rng: np.random.Generator, shape: str, cx: float, cy: float, r: float,
                fill: tuple[int, int, int]) -> None:
    """Draw one filled shape on the supersampled canvas (coordinates in output pixels)."""
    k = _SUPERSAMPLE
    if shape == "circle":
        draw.ellipse([(cx - r) * k, (cy - r) * k, (cx + r) * k, (cy + r) * k], fill=fill)
        return
    angle = math.radians(rng.uniform(-12, 12))
    draw.polygon([(x * k, y * k) for x, y in _polygon(shape, cx, cy, r, angle)], fill=fill)


def _finish(rng: np.random.Generator, canvas: Image.Image) -> tuple[Image.Image, int]:
    """Downsample the canvas to the output size and add Gaussian pixel noise; return image and noise level."""
    small = np.asarray(canvas.reduce(_SUPERSAMPLE), dtype=np.float64)
    sigma = int(rng.integers(0, 13))
    noisy = small + rng.normal(0.0, sigma, size=small.shape) if sigma else small
    return Image.fromarray(np.clip(np.rint(noisy), 0, 255).astype(np.uint8), "RGB"), sigma


def _new_canvas(colour: tuple[int, int, int]) -> tuple[Image.Image, ImageDraw.ImageDraw]:
    canvas = Image.new("RGB", (_CANVAS, _CANVAS), colour)
    return canvas, ImageDraw.Draw(canvas)


def _scattered_centres(rng: np.random.Generator, n: int, r: float) -> list[tuple[float, float]]:
    """Return ``n`` centres inside the image whose discs of radius ``r`` do not touch (rejection sampling)."""
    lo, hi = r + 1.0, IMAGE_SIZE - r - 1.0
    while True:
        centres: list[tuple[float, float]] = []
        for _ in range(200):
            x, y = rng.uniform(lo, hi, size=2)
            if all((x - a) ** 2 + (y - b) ** 2 > (2 * r + 1.5) ** 2 for a, b in centres):
                centres.append((float(x), float(y)))
                if len(centres) == n:
                    return centres


# ------------------------------------------------------------------------------------------------- samplers
# Each sampler draws one image of class ``label`` and returns it with the attributes a caption may mention.


def _single_shape(rng: np.random.Generator, shape: str, colour: str, r_min: float) -> tuple[Image.Image, dict]:
    """One shape of random size and place on a random background."""
    bg, tone = _background(rng)
    r = rng.uniform(r_min, 12.5)
    cx, cy = np.clip(IMAGE_SIZE / 2 + rng.uniform(-6, 6, size=2), r + 1, IMAGE_SIZE - r - 1)
    canvas, draw = _new_canvas(bg)
    _draw_shape(draw, rng, shape, cx, cy, r, _named_colour(rng, colour))
    image, noise = _finish(rng, canvas)
    return image, {"shape": shape, "colour": colour, "background": tone, "size": _size_word(r, r_min, 12.5),
                   "noise": noise}


def _sample_shape(rng: np.random.Generator, label: int) -> tuple[Image.Image, dict]:
    return _single_shape(rng, SHAPES[label], str(rng.choice(list(COLOURS))), 6.0)


def _sample_colour(rng: np.random.Generator, label: int) -> tuple[Image.Image, dict]:
    return _single_shape(rng, str(rng.choice(SHAPES)), list(COLOURS)[label], 5.0)


def _sample_pattern(rng: np.random.Generator, label: int) -> tuple[Image.Image, dict]:
    pattern = PATTERNS[label]
    colour = str(rng.choice(list(COLOURS)))
    bg, tone = _background(rng)
    fg = _named_colour(rng, colour)
    period = rng.uniform(5.0, 9.0) * _SUPERSAMPLE
    phase = rng.uniform(0, period, size=2)
    yy, xx = np.mgrid[0:_CANVAS, 0:_CANVAS].astype(np.float64)
    u, v = (xx + phase[0]) % period / period, (yy + phase[1]) % period / period
    if pattern == "horizontal stripes":
        mask = v < 0.5
    elif pattern == "vertical stripes":
        mask = u < 0.5
    elif pattern == "diagonal stripes":
        sign = 1.0 if rng.random() < 0.5 else -1.0
        mask = ((xx + sign * yy + phase[0]) % period) / period < 0.5
    elif pattern == "polka dots":
        mask = (u - 0.5) ** 2 + (v - 0.5) ** 2 < 0.28 ** 2
    elif pattern == "checkerboard":
        mask = (u < 0.5) ^ (v < 0.5)
    else:  # grid: thin lines both ways
        mask = (u < 0.2) | (v < 0.2)
    pixels = np.where(mask[..., None], np.array(fg, np.uint8), np.array(bg, np.uint8)).astype(np.uint8)
    image, noise = _finish(rng, Image.fromarray(pixels, "RGB"))
    return image, {"pattern": pattern, "colour": colour, "background": tone, "noise": noise}


def _sample_count(rng: np.random.Generator, label: int) -> tuple[Image.Image, dict]:
    n, shape, colour = label + 1, str(rng.choice(SHAPES)), str(rng.choice(list(COLOURS)))
    bg, tone = _background(rng)
    r = rng.uniform(3.0, 5.0)
    canvas, draw = _new_canvas(bg)
    for cx, cy in _scattered_centres(rng, n, r):
        _draw_shape(draw, rng, shape, cx, cy, r, _named_colour(rng, colour))
    image, noise = _finish(rng, canvas)
    return image, {"count": COUNT_WORDS[label], "shape": shape, "colour": colour, "background": tone,
                   "noise": noise}


def _sample_position(rng: np.random.Generator, label: int) -> tuple[Image.Image, dict]:
    position = list(POSITIONS)[label]
    shape, colour = str(rng.choice(SHAPES)), str(rng.choice(list(COLOURS)))
    bg, tone = _background(rng)
    r = rng.uniform(3.5, 6.0)
    fx, fy = POSITIONS[position]
    cx, cy = fx * IMAGE_SIZE + rng.uniform(-4.0, 4.0), fy * IMAGE_SIZE + rng.uniform(-4.0, 4.0)
    canvas, draw = _new_canvas(bg)
    _draw_shape(draw, rng, shape, cx, cy, r, _named_colour(rng, colour))
    image, noise = _finish(rng, canvas)
    return image, {"position": position, "shape": shape, "colour": colour, "background": tone, "noise": noise}


def _sklearn_digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits  # shipped with scikit-learn, no download

    bunch = load_digits()
    return bunch.images, bunch.target


def _digit_split_indices(seed: int, n_train: int, n_test: int) -> dict[str, np.ndarray]:
    """Split the 1797 scikit-learn digits by index, so train and test never share a scan."""
    _, target = _sklearn_digits()
    order = np.random.default_rng([seed, _name_key("digits"), 99]).permutation(len(target))
    if n_train + n_test > len(order):
        raise InputError(f"digits: asked for {n_train}+{n_test} images, only {len(order)} exist")
    return {"train": order[:n_train], "test": order[n_train:n_train + n_test]}


def _render_digit(rng: np.random.Generator, scan: np.ndarray) -> tuple[Image.Image, dict]:
    """Upscale one 8x8 scan (ink 0..16) to a random size, tint ink and paper, place it near the centre, add noise."""
    side = int(rng.integers(22, 31))
    ink_level = Image.fromarray(np.uint8(np.clip(scan / 16.0, 0, 1) * 255), "L").resize((side, side), Image.BICUBIC)
    alpha = np.zeros((IMAGE_SIZE, IMAGE_SIZE))
    centre = (IMAGE_SIZE - side) // 2
    x0, y0 = (int(np.clip(centre + v, 0, IMAGE_SIZE - side)) for v in rng.integers(-3, 4, size=2))
    alpha[y0:y0 + side, x0:x0 + side] = np.asarray(ink_level, dtype=np.float64) / 255.0
    bg, tone = _background(rng)
    colour = str(rng.choice(list(COLOURS))) if rng.random() < 0.5 else ("white" if tone == "dark" else "black")
    ink = np.array(_named_colour(rng, colour) if colour in COLOURS else
                   ((235, 235, 235) if colour == "white" else (20, 20, 20)), np.float64)
    pixels = alpha[..., None] * ink + (1 - alpha[..., None]) * np.array(bg, np.float64)
    sigma = int(rng.integers(0, 13))
    pixels = pixels + rng.normal(0.0, sigma, size=pixels.shape) if sigma else pixels
    image = Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8), "RGB")
    return image, {"colour": colour, "background": tone, "noise": sigma}


def _size_word(r: float, lo: float, hi: float) -> str:
    t = (r - lo) / (hi - lo)
    return "small" if t < 0.33 else ("large" if t > 0.66 else "medium")


def _name_key(name: str) -> int:
    """Stable integer key of a dataset name (seeds per-dataset generators independently of catalog order)."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "little")


# ------------------------------------------------------------------------------------------------- writing


def _synthetic(sampler: Sampler) -> Callable[[WorldDataset, np.random.Generator, int, str], list[Triple]]:
    """Return a split maker drawing images with balanced, shuffled labels from a per-label sampler."""

    def make_split(spec: WorldDataset, rng: np.random.Generator, seed: int, split: str) -> list[Triple]:
        n = spec.n_train if split == "train" else spec.n_test
        labels = rng.permutation(np.arange(n) % len(spec.classnames))
        return [(image, int(label), attrs) for label in labels for image, attrs in [sampler(rng, int(label))]]

    return make_split


def _digit_split(spec: WorldDataset, rng: np.random.Generator, seed: int, split: str) -> list[Triple]:
    """Render the digit scans of one index-disjoint split."""
    images, target = _sklearn_digits()
    out = []
    for i in _digit_split_indices(seed, spec.n_train, spec.n_test)[split]:
        image, attrs = _render_digit(rng, images[i])
        out.append((image, int(target[i]), {**attrs, "digit": DIGITS[int(target[i])], "scan": int(i)}))
    return out


WORLD_DATASETS: dict[str, WorldDataset] = {
    d.name: d
    for d in (
        WorldDataset("world-shapes", SHAPES,
                     ("a photo of a {c}.", "a {c} shape.", "a drawing of a {c}.", "a {c} on a plain background."),
                     _synthetic(_sample_shape)),
        WorldDataset("world-colours", tuple(COLOURS),
                     ("a {c} shape.", "a photo of a {c} object.", "something {c}.", "the colour {c}."),
                     _synthetic(_sample_colour)),
        WorldDataset("world-patterns", PATTERNS,
                     ("a pattern of {c}.", "a texture with {c}.", "a photo of {c}.", "{c}."),
                     _synthetic(_sample_pattern)),
        WorldDataset("world-counts", tuple(f"{w} {'shape' if w == 'one' else 'shapes'}" for w in COUNT_WORDS),
                     ("a photo of {c}.", "an image with {c}.", "{c} on a background.", "a picture of {c}."),
                     _synthetic(_sample_count)),
        WorldDataset("world-positions", tuple(POSITIONS),
                     ("a shape in the {c}.", "an object in the {c} of the image.", "something at the {c}.",
                      "a photo of a shape in the {c}."),
                     _synthetic(_sample_position)),
        WorldDataset("world-digits", DIGITS,
                     ("the number {c}.", "a handwritten {c}.", "a photo of the digit {c}.", "the digit {c}."),
                     _digit_split, n_train=1000),
    )
}


def _split_images(spec: WorldDataset, seed: int, split: str) -> list[Triple]:
    """Return the ``(image, label, attributes)`` triples of one split (its own generator per dataset and split)."""
    rng = np.random.default_rng([seed, _name_key(spec.name), 0 if split == "train" else 1])
    return spec.make_split(spec, rng, seed, split)


def _png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False, compress_level=6)
    return buffer.getvalue()


def _write_dataset(spec: WorldDataset, folder: Path, seed: int) -> None:
    """Write all files of one dataset into ``folder`` (a fresh temporary directory)."""
    (folder / "classnames.txt").write_text("\n".join(spec.classnames) + "\n", encoding="utf-8")
    (folder / "templates.txt").write_text("\n".join(spec.templates) + "\n", encoding="utf-8")
    for split in ("train", "test"):
        (folder / split).mkdir()
        rows, attributes = [], []
        for i, (image, label, attrs) in enumerate(_split_images(spec, seed, split)):
            rel = f"{split}/{i:05d}.png"
            (folder / rel).write_bytes(_png_bytes(image))
            rows.append((rel, label))
            attributes.append({"path": rel, "label": label, **attrs})
        with open(folder / f"{split}.csv", "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh, lineterminator="\n")
            writer.writerow(("path", "label"))
            writer.writerows(rows)
        if split == "train":
            (folder / ATTRIBUTES).write_text("".join(json.dumps(a, sort_keys=True) + "\n" for a in attributes),
                                             encoding="utf-8")


def folder_hash(folder: Path) -> str:
    """Return the sha256 of every file under ``folder`` except the completion marker (relative paths and bytes).

    Files are taken in the order of their relative path's components, as sorting ``Path`` objects orders them.
    """
    h = hashlib.sha256()
    files = _relative_files(str(folder), ()) if os.path.isdir(folder) else ()
    for parts in sorted(files):
        h.update("/".join(parts).encode() + b"\0")
        with open(os.path.join(folder, *parts), "rb") as handle:
            h.update(handle.read())
    return h.hexdigest()


def _relative_files(folder: str, prefix: tuple[str, ...]) -> Iterator[tuple[str, ...]]:
    """Yield the path components (below the walk's root) of every regular file under ``folder``, but markers.

    Symbolic links to folders are not followed, as ``Path.rglob`` does not follow them.
    """
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                yield from _relative_files(entry.path, (*prefix, entry.name))
            elif entry.is_file() and entry.name != MARKER:
                yield (*prefix, entry.name)


def _marker(spec: WorldDataset, seed: int) -> dict:
    """Return what a finished dataset folder must record (its content hash is added when written)."""
    return {"name": spec.name, "seed": seed, "version": GENERATOR_VERSION, "n_train": spec.n_train,
            "n_test": spec.n_test}


def _is_complete(folder: Path, spec: WorldDataset, seed: int) -> bool:
    """Whether ``folder`` holds a finished dataset of this spec, seed and generator version, content unchanged."""
    try:
        marker = json.loads((folder / MARKER).read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return False
    expected = _marker(spec, seed)
    return (all(marker.get(k) == v for k, v in expected.items())
            and content_matches(folder, marker.get("content_hash"), folder_hash))


def _build_dataset(spec: WorldDataset, world: Path, seed: int) -> None:
    """Generate ``spec`` into a temporary folder beside its final place, swapped in whole once it is complete."""
    with atomic_folder(world / spec.name) as folder:
        _write_dataset(spec, folder, seed)
        marker = {**_marker(spec, seed), "content_hash": folder_hash(folder)}
        (folder / MARKER).write_text(json.dumps(marker, indent=1) + "\n", encoding="utf-8")


def ensure_world(root: Path, seed: int = 0) -> Path:
    """Generate the world datasets under ``<root>/world/<name>/`` unless already complete; return ``<root>/world``.

    A second call with the same seed only re-hashes the folders; a missing, partial, edited or other-seed
    dataset is regenerated. A file lock keeps concurrent callers from building the same world twice. Callers
    give each seed its own ``root`` (:func:`~overspec.world.layout.seed_root`), so no complete world is replaced
    under a reader.
    """
    world = Path(root) / "world"
    world.mkdir(parents=True, exist_ok=True)
    with FileLock(str(world / ".lock")):
        for spec in WORLD_DATASETS.values():
            remove_stale_temporaries(world, spec.name)  # what a killed generator left
            if _is_complete(world / spec.name, spec, seed):
                continue
            logger.info("generating world dataset %s (seed %d) in %s", spec.name, seed, world / spec.name)
            _build_dataset(spec, world, seed)
    return world


def world_hash(world_root: Path) -> str:
    """Return one hash over the completion markers of all world datasets (a key for what was trained on)."""
    h = hashlib.sha256()
    for name in sorted(WORLD_DATASETS):
        marker_path = Path(world_root) / name / MARKER
        if not marker_path.is_file():
            raise FileNotFoundError(f"world dataset {name!r} is not generated: {marker_path} is missing "
                                    f"(call ensure_world first)")
        h.update(json.loads(marker_path.read_text(encoding="utf-8"))["content_hash"].encode())
    return h.hexdigest()[:16]


# ------------------------------------------------------------------------------------------------- captions

_PLURALS = {"circle": "circles", "square": "squares", "triangle": "triangles", "diamond": "diamonds",
            "star": "stars", "cross": "crosses"}


def _caption_shapes(a: dict) -> list[str]:
    s, c, bg, size = a["shape"], a["colour"], a["background"], a["size"]
    return [f"a {c} {s}", f"a {c} {s} on a {bg} background", f"a {size} {c} {s}", f"a {s}", f"a {s} shape",
            f"a drawing of a {s}", f"a photo of a {size} {s}", f"a {s} on a {bg} background", f"a {c} {s} shape"]


def _caption_colours(a: dict) -> list[str]:
    s, c, bg = a["shape"], a["colour"], a["background"]
    return [f"a {c} {s}", f"a {c} shape", f"something {c}", f"a {c} object on a {bg} background",
            f"the colour {c}", f"a {c} {s} on a {bg} background", f"a photo of a {c} thing", f"a {a['size']} {c} {s}"]


def _caption_patterns(a: dict) -> list[str]:
    p, c, bg = a["pattern"], a["colour"], a["background"]
    return [p, f"{c} {p}", f"{c} {p} on a {bg} background", f"a pattern of {p}", f"a texture with {c} {p}",
            f"a photo of {p}", f"{p} in {c}"]


def _caption_counts(a: dict) -> list[str]:
    n, s, c, bg = a["count"], a["shape"], a["colour"], a["background"]
    things = (s, "shape", "object") if n == "one" else (_PLURALS[s], "shapes", "objects")
    return [f"{n} {things[0]}", f"{n} {c} {things[0]}", f"{n} {things[1]}", f"{n} {things[2]} on a {bg} background",
            f"a picture of {n} {c} {things[0]}", f"an image with {n} {things[1]}", f"{n} {things[1]} on a background"]


def _caption_positions(a: dict) -> list[str]:
    p, s, c = a["position"], a["shape"], a["colour"]
    return [f"a {c} {s} in the {p}", f"a {s} at the {p}", f"something in the {p}", f"a shape in the {p}",
            f"a small {s} in the {p} of the image", f"an object in the {p}", f"a {c} shape at the {p}"]


def _caption_digits(a: dict) -> list[str]:
    d, c, bg = a["digit"], a["colour"], a["background"]
    return [f"the number {d}", f"a handwritten {d}", f"a {c} {d} on a {bg} background", f"the digit {d}",
            f"a {d} written by hand", f"a photo of the number {d}", f"a {c} handwritten digit {d}"]


def _fix_articles(text: str) -> str:
    """Turn "a" into "an" before a vowel ("an orange star")."""
    return re.sub(r"\b([Aa]) (?=[aeiou])", r"\1n ", text)


_CAPTIONERS: dict[str, Callable[[dict], list[str]]] = {
    "world-shapes": _caption_shapes, "world-colours": _caption_colours, "world-patterns": _caption_patterns,
    "world-counts": _caption_counts, "world-positions": _caption_positions, "world-digits": _caption_digits,
}


def caption_corpus(world_root: Path, *, per_image: int = 2, seed: int = 0) -> list[tuple[Path, str]]:
    """Return ``(image path, caption)`` pairs describing the TRAIN images of every world dataset.

    Captions combine the labelled attribute with nuisance attributes (colour, background, size) in varied
    wording, ``per_image`` distinct ones per image, chosen by a generator seeded with ``seed``. Test images are
    never described: only ``train_attributes.jsonl`` is read. ``world_root`` is what :func:`ensure_world`
    returned.
    """
    pairs: list[tuple[Path, str]] = []
    for name, captioner in _CAPTIONERS.items():
        folder = Path(world_root) / name
        attributes_path = folder / ATTRIBUTES
        if not attributes_path.is_file():
            raise FileNotFoundError(f"world dataset {name!r}: {attributes_path} is missing (call ensure_world first)")
        rng = np.random.default_rng([seed, _name_key(name), 2])
        for line in attributes_path.read_text(encoding="utf-8").splitlines():
            record = json.loads(line)
            options = [_fix_articles(text) for text in captioner(record)]
            for k in rng.choice(len(options), size=min(per_image, len(options)), replace=False):
                pairs.append((folder / record["path"], options[int(k)]))
    return pairs
