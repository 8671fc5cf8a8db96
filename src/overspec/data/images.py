"""The one place images are decoded: any PIL mode to 8-bit RGB as a viewer shows it, and shapes bounded first.

``Image.convert("RGB")`` clips 16-bit and 32-bit pixels to 255 (a 16-bit PNG turns white) and drops transparency
(what a transparent pixel happens to hold shows through). :func:`to_rgb` scales high-depth modes to 8 bits and
composites transparency over white. :func:`open_rgb` also refuses, from the header alone, shapes whose resize would
need gigabytes (a 1 KB 1,000,000 × 1 PNG passes PIL's decompression-bomb check).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image
from overspec.errors import InputError

__all__ = ["MAX_ASPECT_RATIO", "open_rgb", "to_rgb", "check_shape"]

#: Largest ratio of the long to the short side accepted (a resize to the model's short side multiplies the rest).
MAX_ASPECT_RATIO = 100

#: Background that transparent pixels are composited over.
_BACKGROUND = (255, 255, 255)


def open_rgb(source: Path | str | bytes | BinaryIO) -> Image.Image:
    """Decode an image file, its bytes or a file object as 8-bit RGB (see :func:`to_rgb`), refusing extreme shapes."""
    handle = io.BytesIO(source) if isinstance(source, bytes) else source
    with Image.open(handle) as image:
        check_shape(image.size)
        image.load()
        return to_rgb(image)


def check_shape(size: tuple[int, int]) -> None:
    """Raise ``ValueError`` for an empty image or one whose sides differ by more than :data:`MAX_ASPECT_RATIO`."""
    width, height = size
    if min(width, height) < 1:
        raise InputError(f"image of {width}x{height} pixels is empty")
    if max(width, height) > MAX_ASPECT_RATIO * min(width, height):
        raise InputError(f"image of {width}x{height} pixels has an aspect ratio beyond {MAX_ASPECT_RATIO}:1 "
                         "(resizing it would need gigabytes); refused")


def to_rgb(image: Image.Image) -> Image.Image:
    """Return ``image`` as 8-bit RGB: 16-bit and integer modes scaled from 0-65535, float modes from 0-1 (0-255 when
    the values exceed 1), transparency composited over white, palette, CMYK, 1-bit and grey converted by PIL."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode.startswith("I;16") or mode == "I":
        return _grey_to_rgb(np.asarray(image, dtype=np.float64) / 257.0)
    if mode == "F":
        values = np.asarray(image, dtype=np.float64)
        finite = values[np.isfinite(values)]
        scale = 255.0 if finite.size and finite.max() <= 1.0 else 1.0
        return _grey_to_rgb(np.nan_to_num(values) * scale)
    if _has_transparency(image):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*_BACKGROUND, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _has_transparency(image: Image.Image) -> bool:
    """Whether ``image`` carries an alpha channel or a transparent palette or colour entry."""
    return image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info


def _grey_to_rgb(values: np.ndarray) -> Image.Image:
    """A grey image from values on the 0-255 scale (rounded and clipped), as RGB."""
    grey = np.clip(np.rint(values), 0, 255).astype(np.uint8)
    return Image.fromarray(grey, mode="L").convert("RGB")
