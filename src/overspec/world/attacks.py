"""Presentation attacks for the embedded PAD sources: print, replay and mask frame groups.

Each PAD source has a :class:`CameraStyle` applied to bona fide and attack frames alike, so that sources differ
the way real PAD datasets do (colour gain, gamma, blur, noise, background).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
from PIL import Image, ImageFilter

from overspec.world.faces import (FRONTAL, Capture, Identity, RenderedFace, finish_image, render_face,
                                       sample_capture)
from overspec.errors import InputError

__all__ = ["PAI_SPECIES", "CameraStyle", "apply_camera", "render_bona_fide_video", "render_attack_video"]

PAI_SPECIES = ("print", "replay", "mask")


@dataclass(frozen=True)
class CameraStyle:
    """Capture characteristics of one PAD source dataset (applied to bona fide and attack frames alike)."""

    name: str
    gain: tuple[float, float, float] = (1.0, 1.0, 1.0)
    gamma: float = 1.0
    blur: float = 0.0
    noise: float = 2.0
    contrast: float = 1.0
    background: tuple[float, float, float] = (150.0, 150.0, 150.0)
    scale: float = 1.0


def apply_camera(image: np.ndarray, style: CameraStyle, seed: int) -> np.ndarray:
    """Pass a frame through a source's camera: colour gain, contrast, gamma, blur and sensor noise."""
    x = image.astype(np.float32) / 255.0
    x = np.clip((x - 0.5) * style.contrast + 0.5, 0, 1) * np.asarray(style.gain, dtype=np.float32)
    x = np.clip(x, 0, 1) ** style.gamma
    return finish_image(Image.fromarray(np.clip(x * 255, 0, 255).astype(np.uint8)), style.blur, style.noise, seed)


def _video_captures(rng: np.random.Generator, n_frames: int, style: CameraStyle, rigid: bool) -> list[Capture]:
    base = sample_capture(rng, FRONTAL, background=style.background, noise=0.0, blur=0.0, scale=style.scale,
                          light_gain=(1.0, 1.0, 1.0))
    phase = rng.uniform(0, 2 * math.pi)
    blink = int(rng.integers(n_frames)) if (not rigid and n_frames > 2) else -1
    captures = []
    for k in range(n_frames):
        t = phase + 0.9 * k
        captures.append(replace(
            base, yaw=base.yaw + 0.06 * math.sin(t), roll=base.roll + 1.5 * math.cos(t),
            shift=(base.shift[0] + 0.8 * math.sin(1.3 * t), base.shift[1] + 0.6 * math.cos(0.7 * t)),
            smile=0.0 if rigid else base.smile + 0.15 * math.sin(2 * t), eye_open=0.05 if k == blink else 1.0,
            noise_seed=base.noise_seed + k))
    return captures


def render_bona_fide_video(identity: Identity, style: CameraStyle, seed: int, n_frames: int = 3) -> list[np.ndarray]:
    """Frames of a live face: small head motion, expression change and one blink, through the source camera."""
    rng = np.random.default_rng([seed, 0xB0])
    return [apply_camera(render_face(identity, c).image, style, c.noise_seed)
            for c in _video_captures(rng, n_frames, style, rigid=False)]


def _halftone(image: np.ndarray, period: float, angle: float) -> np.ndarray:
    h, w = image.shape[:2]
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    u = xs * math.cos(angle) + ys * math.sin(angle)
    v = -xs * math.sin(angle) + ys * math.cos(angle)
    screen = 0.5 + 0.25 * (np.cos(2 * math.pi * u / period) + np.cos(2 * math.pi * v / period))
    x = image.astype(np.float32) / 255.0
    return np.clip(x + 0.35 * (screen[..., None] - 0.5) * (1.0 - x) * 1.6, 0, 1)


def _print_frame(photo: np.ndarray, k: int, params: dict) -> np.ndarray:
    """A printed photo held up to the camera: rigid motion of the whole sheet, halftone, paper colour, blur."""
    size = photo.shape[0]
    sheet = Image.fromarray(photo).rotate(params["tilt"] + 0.8 * math.sin(0.9 * k + params["phase"]),
                                          resample=Image.BILINEAR, fillcolor=params["paper"],
                                          translate=(0.8 * math.cos(k + params["phase"]), 0.5 * math.sin(k)))
    x = _halftone(np.asarray(sheet), params["period"], params["angle"])
    x = x * np.array([1.0, 0.97, 0.86], dtype=np.float32) * 0.92 + 0.05
    x = 0.8 * x + 0.2 * x.mean(axis=2, keepdims=True)
    out = Image.fromarray(np.clip(x * 255, 0, 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(params["blur"]))
    return np.asarray(out.resize((size, size)))


def _replay_frame(frame: np.ndarray, params: dict) -> np.ndarray:
    """A face replayed on a screen: gamma, raised black level and blue cast, moiré, bezel border, glare."""
    h, w = frame.shape[:2]
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    x = (frame.astype(np.float32) / 255.0) ** params["gamma"] * 0.85 + 0.08
    x = x * np.array([0.93, 0.98, 1.08], dtype=np.float32)
    moire = np.sin(2 * math.pi * (xs * math.cos(params["angle"]) + ys * math.sin(params["angle"])) / params["period"])
    x = x + 0.06 * moire[..., None]
    glare = np.exp(-(((xs - params["glare"][0]) ** 2 + (ys - params["glare"][1]) ** 2) / (2 * (0.18 * w) ** 2)))
    x = x + 0.18 * glare[..., None]
    b = params["border"]
    side = params["side"]
    if side == 0:
        x[:, :b] = 0.05
    elif side == 1:
        x[:, w - b:] = 0.05
    else:
        x[h - b:, :] = 0.05
    return np.clip(x * 255, 0, 255).astype(np.uint8)


def _mask_frame(rendered: RenderedFace) -> np.ndarray:
    """A worn mask: posterised flat texture and dark eye holes at the eye landmarks."""
    image = Image.fromarray(rendered.image).filter(ImageFilter.MedianFilter(5))
    x = np.asarray(image).astype(np.float32)
    x = np.round(x / 16.0) * 16.0
    h, w = x.shape[:2]
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    r = 0.045 * w
    for ex, ey in rendered.landmarks[:2]:
        hole = ((xs - ex) / (1.4 * r)) ** 2 + ((ys - ey) / r) ** 2 < 1.0
        x[hole] = x[hole] * 0.25
    return np.clip(x, 0, 255).astype(np.uint8)


def render_attack_video(identity: Identity, species: str, style: CameraStyle, seed: int,
                        n_frames: int = 3) -> list[np.ndarray]:
    """Frames of a presentation attack of ``species`` (print, replay or mask) on ``identity``."""
    if species not in PAI_SPECIES:
        raise InputError(f"unknown PAI species {species!r}; expected one of {', '.join(PAI_SPECIES)}")
    rng = np.random.default_rng([seed, 0xA7, PAI_SPECIES.index(species)])
    if species == "print":
        photo = render_face(identity, sample_capture(rng, FRONTAL, background=(225.0, 222.0, 215.0), noise=1.0))
        params = {"tilt": float(rng.uniform(-4, 4)), "phase": float(rng.uniform(0, 6.28)),
                  "paper": (236, 232, 220), "period": float(rng.uniform(2.6, 3.6)),
                  "angle": float(rng.uniform(0.3, 1.2)), "blur": float(rng.uniform(0.5, 1.0))}
        frames = [_print_frame(photo.image, k, params) for k in range(n_frames)]
    elif species == "replay":
        source = render_bona_fide_video(identity, CameraStyle("screen", noise=1.0), int(rng.integers(2**31)), n_frames)
        size = source[0].shape[0]
        params = {"gamma": float(rng.uniform(0.65, 0.8)), "angle": float(rng.uniform(0, math.pi)),
                  "period": float(rng.uniform(3.0, 5.0)), "glare": rng.uniform(0, size, 2),
                  "border": int(rng.integers(3, 8)), "side": int(rng.integers(3))}
        frames = [_replay_frame(f, params) for f in source]
    else:
        captures = _video_captures(rng, n_frames, style, rigid=True)
        frames = [_mask_frame(render_face(identity, replace(c, flat=0.8, noise=0.0))) for c in captures]
    return [apply_camera(f, style, seed + 7919 * k) for k, f in enumerate(frames)]
