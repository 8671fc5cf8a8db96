"""Synthetic faces for the embedded biometric world: identities, captures and rendering.

A face is drawn from an :class:`Identity` (geometry and colouring that stay fixed for a person) and a
:class:`Capture` (pose, lighting, expression, age and noise that vary per image). Heads are modelled as
ellipsoids so that yaw moves features across the face and hides the far eye, which gives frontal-vs-profile
pairs their difficulty. Every render returns the five landmarks in ArcFace order (left eye, right eye, nose
tip, left mouth corner, right mouth corner; "left" = image left, biometric-protocols.md §3.1) in pixels.
Morphs live in :mod:`~overspec.world.morphs`, presentation attacks in :mod:`~overspec.world.attacks`.
Everything is numpy + PIL and deterministic from explicit seeds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

__all__ = [
    "Identity", "Capture", "CaptureRanges", "RenderedFace", "FRONTAL", "WILD", "PROFILE", "PASSPORT",
    "make_identity", "make_identities", "sample_capture", "render_face", "finish_image",
]



_SKIN_TONES = np.array([(241, 200, 170), (226, 176, 140), (200, 140, 104), (165, 108, 72),
                        (125, 80, 54), (92, 60, 42)], dtype=float)
_HAIR_COLOURS = np.array([(28, 24, 22), (68, 44, 30), (112, 76, 46), (196, 164, 104), (146, 68, 38),
                          (62, 58, 56)], dtype=float)
_EYE_COLOURS = np.array([(70, 45, 25), (40, 90, 150), (60, 110, 70), (25, 20, 18), (110, 100, 60)], dtype=float)
_GREY = np.array([168.0, 168.0, 170.0])
_REF = 112.0  # geometry is specified on a 112-pixel canvas and scaled to the capture's size


@dataclass(frozen=True)
class Identity:
    """Per-person geometry (pixels on a 112 canvas) and colouring; fixed across captures of that person."""

    face_w: float
    face_h: float
    jaw: float
    eye_dx: float
    eye_y: float
    eye_r: float
    nose_len: float
    nose_w: float
    nose_depth: float
    mouth_dy: float
    mouth_w: float
    brow_h: float
    brow_t: float
    skin: tuple[float, float, float]
    hair: tuple[float, float, float]
    iris: tuple[float, float, float]
    lips: tuple[float, float, float]
    hairline: float
    hair_volume: float
    long_hair: bool
    beard: bool
    glasses: bool
    balding: bool
    moles: tuple[tuple[float, float, float], ...] = ()


@dataclass(frozen=True)
class Capture:
    """Per-image conditions: pose (yaw rad, roll deg), placement, lighting, expression, age and noise."""

    yaw: float = 0.0
    roll: float = 0.0
    scale: float = 1.0
    shift: tuple[float, float] = (0.0, 0.0)
    size: int = 112
    light_azimuth: float = 0.0
    light_elevation: float = 0.4
    ambient: float = 0.7
    diffuse: float = 0.35
    light_gain: tuple[float, float, float] = (1.0, 1.0, 1.0)
    smile: float = 0.0
    eye_open: float = 1.0
    brow_raise: float = 0.0
    age: float = 0.0
    background: tuple[float, float, float] = (150.0, 160.0, 170.0)
    blur: float = 0.0
    noise: float = 2.0
    noise_seed: int = 0
    flat: float = 0.0


@dataclass(frozen=True)
class CaptureRanges:
    """Uniform sampling ranges for :func:`sample_capture` (one named preset per kind of data set)."""

    yaw: tuple[float, float] = (-0.25, 0.25)
    roll: tuple[float, float] = (-6.0, 6.0)
    scale: tuple[float, float] = (0.95, 1.05)
    shift: float = 2.0
    ambient: tuple[float, float] = (0.55, 0.8)
    diffuse: tuple[float, float] = (0.2, 0.45)
    smile: tuple[float, float] = (-0.2, 0.8)
    blink: float = 0.05
    noise: tuple[float, float] = (1.0, 4.0)
    blur: tuple[float, float] = (0.0, 0.5)
    gain: float = 0.08
    background: str = "random"


FRONTAL = CaptureRanges(yaw=(-0.12, 0.12), roll=(-4.0, 4.0))
WILD = CaptureRanges(yaw=(-0.45, 0.45), roll=(-10.0, 10.0), ambient=(0.45, 0.85), diffuse=(0.15, 0.55),
                     noise=(1.0, 6.0), blur=(0.0, 0.9), gain=0.12, shift=3.0)
PROFILE = CaptureRanges(yaw=(0.95, 1.25), roll=(-6.0, 6.0))
PASSPORT = CaptureRanges(yaw=(-0.04, 0.04), roll=(-1.5, 1.5), scale=(0.99, 1.01), shift=0.5, ambient=(0.75, 0.8),
                         diffuse=(0.2, 0.25), smile=(-0.05, 0.05), blink=0.0, noise=(1.0, 1.5), blur=(0.0, 0.1),
                         gain=0.02, background="plain")


@dataclass
class RenderedFace:
    """An RGB uint8 image (H, W, 3) with its five landmarks (5, 2) as (x, y) pixel coordinates."""

    image: np.ndarray
    landmarks: np.ndarray = field(repr=False)


def _uniform(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    return float(rng.uniform(bounds[0], bounds[1]))


def _jitter_colour(rng: np.random.Generator, base: np.ndarray, spread: float) -> tuple[float, float, float]:
    colour = np.clip(base + rng.normal(0.0, spread, 3), 0, 255)
    return (float(colour[0]), float(colour[1]), float(colour[2]))


def make_identity(seed: int) -> Identity:
    """Draw one identity deterministically from ``seed``."""
    rng = np.random.default_rng([seed, 0x1D])
    tone = _SKIN_TONES[rng.integers(len(_SKIN_TONES))]
    moles = tuple((float(rng.uniform(-0.7, 0.7)), float(rng.uniform(-0.2, 0.7)), float(rng.uniform(0.8, 1.6)))
                  for _ in range(int(rng.integers(0, 4))))
    return Identity(
        face_w=_uniform(rng, (31, 39)), face_h=_uniform(rng, (43, 51)), jaw=_uniform(rng, (1.8, 3.2)),
        eye_dx=_uniform(rng, (15.0, 20.0)), eye_y=_uniform(rng, (-13.0, -8.0)), eye_r=_uniform(rng, (3.2, 4.8)),
        nose_len=_uniform(rng, (16.0, 24.0)), nose_w=_uniform(rng, (4.0, 7.5)), nose_depth=_uniform(rng, (5.0, 11.0)),
        mouth_dy=_uniform(rng, (35.0, 45.0)), mouth_w=_uniform(rng, (9.0, 14.5)), brow_h=_uniform(rng, (6.0, 10.0)),
        brow_t=_uniform(rng, (1.2, 3.2)), skin=_jitter_colour(rng, tone, 8.0),
        hair=_jitter_colour(rng, _HAIR_COLOURS[rng.integers(len(_HAIR_COLOURS))], 10.0),
        iris=_jitter_colour(rng, _EYE_COLOURS[rng.integers(len(_EYE_COLOURS))], 10.0),
        lips=_jitter_colour(rng, tone * np.array([0.85, 0.6, 0.6]), 10.0),
        hairline=_uniform(rng, (-40.0, -26.0)), hair_volume=_uniform(rng, (0.0, 9.0)),
        long_hair=bool(rng.random() < 0.4), beard=bool(rng.random() < 0.25), glasses=bool(rng.random() < 0.2),
        balding=bool(rng.random() < 0.2), moles=moles,
    )


def make_identities(n: int, seed: int) -> list[Identity]:
    """Return ``n`` identities; identity ``i`` depends only on ``(seed, i)``."""
    return [make_identity(seed * 1_000_003 + i) for i in range(n)]


def sample_capture(rng: np.random.Generator, ranges: CaptureRanges = FRONTAL, **fixed: object) -> Capture:
    """Draw capture conditions from ``ranges``; keyword arguments fix fields (e.g. ``age=0.8``, ``size=144``)."""
    background = ((235.0, 235.0, 238.0) if ranges.background == "plain"
                  else tuple(float(v) for v in rng.uniform(40, 230, 3)))
    gain = tuple(float(v) for v in 1.0 + rng.uniform(-ranges.gain, ranges.gain, 3))
    yaw = _uniform(rng, ranges.yaw)
    if ranges.yaw[0] >= 0 and rng.random() < 0.5:  # one-sided ranges (profiles) turn either way
        yaw = -yaw
    capture = Capture(
        yaw=yaw,
        roll=_uniform(rng, ranges.roll), scale=_uniform(rng, ranges.scale),
        shift=(float(rng.uniform(-ranges.shift, ranges.shift)), float(rng.uniform(-ranges.shift, ranges.shift))),
        light_azimuth=float(rng.uniform(-math.pi, math.pi)), light_elevation=float(rng.uniform(0.2, 0.9)),
        ambient=_uniform(rng, ranges.ambient), diffuse=_uniform(rng, ranges.diffuse), light_gain=gain,
        smile=_uniform(rng, ranges.smile), eye_open=0.05 if rng.random() < ranges.blink else 1.0,
        brow_raise=float(rng.uniform(-0.5, 1.0)), background=background, blur=_uniform(rng, ranges.blur),
        noise=_uniform(rng, ranges.noise), noise_seed=int(rng.integers(2**31)),
    )
    return replace(capture, **fixed)


class _Head:
    """Ellipsoid head model: projects canonical face points (pixels from the face centre) under yaw."""

    def __init__(self, identity: Identity, capture: Capture, unit: float) -> None:
        self.w, self.h = identity.face_w * unit, identity.face_h * unit
        self.d = 0.85 * self.w
        self.cos, self.sin = math.cos(capture.yaw), math.sin(capture.yaw)

    def depth(self, x: float, y: float) -> float:
        return self.d * math.sqrt(max(0.04, 1.0 - (x / self.w) ** 2 - (y / self.h) ** 2))

    def project(self, x: float, y: float, lift: float = 0.0) -> tuple[float, float, bool]:
        """Return projected (x', y) and whether the point faces the camera."""
        z = self.depth(x, y) + lift
        return x * self.cos + z * self.sin, y, -x * self.sin + z * self.cos > 0.5

    def foreshortening(self, x: float, y: float) -> float:
        """Horizontal scale of a small feature at (x, y): derivative of the projected x."""
        z = self.depth(x, y)
        dz_dx = -(self.d ** 2) * x / (self.w ** 2 * max(z, 1e-3))
        return float(np.clip(self.cos + self.sin * dz_dx, 0.1, 1.2))

    def silhouette_w(self) -> float:
        return math.sqrt((self.w * self.cos) ** 2 + (self.d * self.sin) ** 2)


def _face_polygon(cx: float, cy: float, half_w: float, h_top: float, h_bot: float, jaw: float) -> list[tuple]:
    points = []
    for t in np.linspace(0.0, 2 * math.pi, 72, endpoint=False):
        c, s = math.cos(t), math.sin(t)
        if s < 0:
            points.append((cx + half_w * c, cy + h_top * s))
        else:
            power = 2.0 / jaw
            points.append((cx + half_w * math.copysign(abs(c) ** power, c), cy + h_bot * abs(s) ** power))
    return points


def _mix(a: Sequence[float], b: Sequence[float], t: float) -> tuple[int, int, int]:
    return tuple(int(round((1 - t) * float(x) + t * float(y))) for x, y in zip(a, b, strict=True))


def _ellipse(draw: ImageDraw.ImageDraw, x: float, y: float, rx: float, ry: float, fill: Sequence[int] | None,
             outline: Sequence[int] | None = None, width: int = 1) -> None:
    draw.ellipse((x - rx, y - ry, x + rx, y + ry), fill=None if fill is None else tuple(int(v) for v in fill),
                 outline=None if outline is None else tuple(outline), width=width)


def _draw_head(draw: ImageDraw.ImageDraw, mask_draw: ImageDraw.ImageDraw, identity: Identity, capture: Capture,
               cx: float, cy: float, unit: float) -> np.ndarray:
    """Paint hair, face and features in painter's order; return the five landmarks (canvas pixels)."""
    head = _Head(identity, capture, unit)
    age = capture.age
    hair = _mix(identity.hair, _GREY, min(1.0, age ** 1.5))
    skin = _mix(identity.skin, np.mean(identity.skin) * np.ones(3), 0.25 * age)
    half_w = head.silhouette_w()
    h_bot = head.h * (1.0 + 0.06 * age)
    hair_cx = cx - 0.4 * head.w * head.sin
    volume = (identity.hair_volume + 3.0) * unit
    if identity.long_hair:
        draw.polygon([(hair_cx - half_w - volume, cy - 0.2 * head.h), (hair_cx + half_w + volume, cy - 0.2 * head.h),
                      (hair_cx + half_w + volume * 1.5, cy + 1.25 * head.h),
                      (hair_cx - half_w - volume * 1.5, cy + 1.25 * head.h)], fill=hair)
    _ellipse(draw, hair_cx, cy - 0.12 * head.h, half_w + volume, head.h * 0.98 + volume * 0.6, hair)
    for side in (-1, 1):  # ears: the near one is drawn over the face later
        ex, ey, visible = head.project(side * head.w * 0.97, 0.05 * head.h, lift=-0.25 * head.d)
        if not visible:
            _ellipse(draw, cx + ex, cy + ey, 4.5 * unit * max(0.35, abs(head.cos)), 8 * unit, _mix(skin, (0, 0, 0), .1))
    polygon = _face_polygon(cx, cy, half_w, head.h, h_bot, identity.jaw)
    draw.polygon(polygon, fill=skin)
    mask_draw.polygon(polygon, fill=255)
    hairline = identity.hairline * unit - (10.0 * unit * age if identity.balding else 0.0)
    fringe = [p for p in polygon if p[1] < cy + hairline]
    if len(fringe) >= 3:
        fringe.sort(key=lambda p: p[0])
        draw.polygon(fringe + [(fringe[-1][0], cy + hairline), (fringe[0][0], cy + hairline)], fill=hair)
    for side in (-1, 1):
        ex, ey, visible = head.project(side * head.w * 0.97, 0.05 * head.h, lift=-0.25 * head.d)
        if visible and abs(ex) > 0.6 * half_w:
            _ellipse(draw, cx + ex, cy + ey, 4.5 * unit * max(0.35, abs(head.cos)), 8 * unit, _mix(skin, (0, 0, 0), .1))
    if identity.beard:
        beard_top = identity.eye_y * unit + identity.nose_len * unit + 4 * unit
        beard = [p for p in polygon if p[1] > cy + beard_top]
        if len(beard) >= 3:
            draw.polygon(beard, fill=_mix(skin, hair, 0.75))
    for mx, my, mr in identity.moles:
        px, py, visible = head.project(mx * head.w, my * head.h)
        if visible:
            _ellipse(draw, cx + px, cy + py, mr * unit, mr * unit, _mix(skin, (40, 25, 20), 0.7))
    eyes = _draw_eyes(draw, head, identity, capture, cx, cy, unit, skin, hair)
    nose = _draw_nose(draw, head, identity, cx, cy, unit, skin)
    mouth = _draw_mouth(draw, head, identity, capture, cx, cy, unit, skin)
    if age > 0.3:
        _draw_wrinkles(draw, head, identity, cx, cy, unit, skin, age)
    return np.array([eyes[0], eyes[1], nose, mouth[0], mouth[1]], dtype=float)


def _draw_eyes(draw: ImageDraw.ImageDraw, head: _Head, identity: Identity, capture: Capture, cx: float, cy: float,
               unit: float, skin: Sequence[float], hair: Sequence[float]) -> list[tuple[float, float]]:
    centres = []
    r = identity.eye_r * unit * (1.0 - 0.08 * capture.age)
    brow_colour = _mix(hair, (0, 0, 0), 0.3)
    for side in (-1, 1):
        x0, y0 = side * identity.eye_dx * unit, identity.eye_y * unit
        px, py, visible = head.project(x0, y0, lift=-2.0 * unit)
        centres.append((cx + px, cy + py))
        if not visible:
            continue
        fs = head.foreshortening(x0, y0)
        ex, ey = cx + px, cy + py
        if capture.eye_open < 0.3:
            draw.line((ex - 1.4 * r * fs, ey, ex + 1.4 * r * fs, ey), fill=_mix(skin, (0, 0, 0), 0.6),
                      width=max(1, int(unit)))
        else:
            _ellipse(draw, ex, ey, 1.45 * r * fs, 0.85 * r * capture.eye_open, (245, 245, 240),
                     outline=_mix(skin, (0, 0, 0), 0.5), width=max(1, int(0.6 * unit)))
            _ellipse(draw, ex, ey, 0.72 * r * fs, 0.72 * r * capture.eye_open, identity.iris)
            _ellipse(draw, ex, ey, 0.3 * r * fs, 0.3 * r * capture.eye_open, (10, 10, 12))
        by = ey - (identity.brow_h + 2.0 * capture.brow_raise) * unit
        draw.line((ex - 1.8 * r * fs, by - 0.5 * side * unit, ex + 1.8 * r * fs, by + 0.5 * side * unit),
                  fill=brow_colour, width=max(1, int(round(identity.brow_t * unit))))
        if identity.glasses:
            _ellipse(draw, ex, ey, 2.4 * r * fs, 2.0 * r, None, outline=(30, 30, 35), width=max(1, int(unit)))
    if identity.glasses:
        (lx, ly), (rx, ry) = centres
        draw.line((lx + 2.2 * r * 0.8, ly, rx - 2.2 * r * 0.8, ry), fill=(30, 30, 35), width=max(1, int(unit)))
    return centres


def _draw_nose(draw: ImageDraw.ImageDraw, head: _Head, identity: Identity, cx: float, cy: float, unit: float,
               skin: Sequence[float]) -> tuple[float, float]:
    top_y = identity.eye_y * unit + 2 * unit
    tip_y = identity.eye_y * unit + identity.nose_len * unit
    bx, by, _ = head.project(0.0, top_y, lift=1.0 * unit)
    tx, ty, _ = head.project(0.0, tip_y, lift=identity.nose_depth * unit)
    half = identity.nose_w * unit * max(0.3, head.foreshortening(0.0, tip_y))
    shade = _mix(skin, (0, 0, 0), 0.22)
    draw.polygon([(cx + bx - 0.25 * half, cy + by), (cx + bx + 0.25 * half, cy + by),
                  (cx + tx + half, cy + ty + 1.5 * unit), (cx + tx - half, cy + ty + 1.5 * unit)],
                 fill=_mix(skin, (0, 0, 0), 0.08))
    draw.line((cx + bx + 0.3 * half * head.sin, cy + by, cx + tx + 0.6 * half * head.sin, cy + ty), fill=shade,
              width=max(1, int(unit)))
    for side in (-1, 1):
        _ellipse(draw, cx + tx + side * 0.55 * half, cy + ty + 1.6 * unit, 0.35 * half, 0.7 * unit,
                 _mix(skin, (0, 0, 0), 0.45))
    return cx + tx, cy + ty


def _draw_mouth(draw: ImageDraw.ImageDraw, head: _Head, identity: Identity, capture: Capture, cx: float, cy: float,
                unit: float, skin: Sequence[float]) -> list[tuple[float, float]]:
    my = (identity.eye_y + identity.mouth_dy) * unit
    mw = (identity.mouth_w + 1.8 * capture.smile) * unit
    lift = 3.0 * capture.smile * unit
    corners, visible = [], []
    for side in (-1, 1):
        px, py, vis = head.project(side * mw, my - lift)
        corners.append((cx + px, cy + py))
        visible.append(vis)
    ux, uy, _ = head.project(0.0, my - 1.8 * unit, lift=1.5 * unit)
    lx, ly, _ = head.project(0.0, my + (2.5 + 2.5 * max(0.0, capture.smile)) * unit, lift=1.5 * unit)
    (l_x, l_y), (r_x, r_y) = corners
    if not visible[0]:
        l_x = min(l_x, cx + ux - 0.5 * unit)
    if not visible[1]:
        r_x = max(r_x, cx + ux + 0.5 * unit)
    lips = tuple(int(v) for v in identity.lips)
    mid_y = cy + my + 1.0 * unit
    draw.polygon([(l_x, l_y), (cx + ux, cy + uy), (r_x, r_y), (cx + lx, cy + ly)], fill=lips)
    if capture.smile > 0.55:
        draw.polygon([(l_x + unit, l_y + 0.3 * unit), (cx + ux, mid_y - 0.5 * unit), (r_x - unit, r_y + 0.3 * unit),
                      (cx + lx, cy + ly - 1.5 * unit)], fill=(236, 232, 222))
    draw.line((l_x, l_y, cx + ux, mid_y, r_x, r_y), fill=_mix(lips, (0, 0, 0), 0.5), width=max(1, int(unit)))
    return corners


def _draw_wrinkles(draw: ImageDraw.ImageDraw, head: _Head, identity: Identity, cx: float, cy: float, unit: float,
                   skin: Sequence[float], age: float) -> None:
    colour = _mix(skin, (0, 0, 0), 0.25 * age)
    for k in range(1 + int(3 * age)):
        y = (identity.eye_y - identity.brow_h - 5 - 3.5 * k) * unit
        x0, y0, _ = head.project(-0.45 * head.w, y)
        x1, y1, _ = head.project(0.45 * head.w, y)
        draw.line((cx + x0, cy + y0, cx + x1, cy + y1), fill=colour, width=max(1, int(0.6 * unit)))
    for side in (-1, 1):
        x0, y0, vis = head.project(side * 0.35 * head.w, (identity.eye_y + identity.nose_len) * unit)
        x1, y1, _ = head.project(side * (identity.mouth_w + 3) * unit, (identity.eye_y + identity.mouth_dy + 3) * unit)
        if vis:
            draw.line((cx + x0, cy + y0, cx + x1, cy + y1), fill=colour, width=max(1, int(0.8 * unit)))


def _shade(canvas: np.ndarray, mask: np.ndarray, capture: Capture, cx: float, cy: float, w: float, h: float) -> None:
    """Lambertian shading on the ellipsoid normals inside the face mask; a mild gradient elsewhere."""
    ys, xs = np.mgrid[0:canvas.shape[0], 0:canvas.shape[1]].astype(np.float32)
    u = np.clip((xs - cx) / (1.15 * w), -1, 1)
    v = np.clip((ys - cy) / (1.15 * h), -1, 1)
    nz = np.sqrt(np.clip(1.0 - u * u - v * v, 0.0, 1.0))
    el, az = capture.light_elevation, capture.light_azimuth
    light = np.array([math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)], dtype=np.float32)
    lambert = np.clip(u * light[0] + v * light[1] + nz * light[2], 0.0, 1.0)
    lit = capture.ambient + capture.diffuse * lambert
    face = (1.0 - capture.flat) * lit + capture.flat * (capture.ambient + 0.5 * capture.diffuse)
    diffuse = capture.diffuse
    back = capture.ambient + 0.5 * diffuse * (0.5 + 0.5 * (u * light[0] + v * light[1]))
    weight = mask.astype(np.float32) / 255.0
    factor = (weight * face + (1.0 - weight) * back) * (1.0 / max(0.5, capture.ambient + 0.5 * diffuse))
    canvas *= factor[..., None] * np.asarray(capture.light_gain, dtype=np.float32)


def _rotate_points(points: np.ndarray, degrees: float, cx: float, cy: float) -> np.ndarray:
    """Where PIL's counter-clockwise ``rotate(degrees, center=(cx, cy))`` sends ``points``."""
    t = math.radians(degrees)
    d = points - np.array([cx, cy])
    return np.stack([cx + d[:, 0] * math.cos(t) + d[:, 1] * math.sin(t),
                     cy - d[:, 0] * math.sin(t) + d[:, 1] * math.cos(t)], axis=1)


def finish_image(image: Image.Image, blur: float, noise: float, seed: int) -> np.ndarray:
    """Return ``image`` as uint8 RGB after optional Gaussian blur and seeded sensor noise (every render ends here)."""
    if blur > 0.05:
        image = image.filter(ImageFilter.GaussianBlur(blur))
    array = np.asarray(image, dtype=np.float32)
    if noise > 0:
        array = array + np.random.default_rng([seed, 0xA5]).normal(0.0, noise, array.shape).astype(np.float32)
    return np.clip(np.rint(array), 0, 255).astype(np.uint8)


def render_face(identity: Identity, capture: Capture = Capture()) -> RenderedFace:
    """Render ``identity`` under ``capture`` as a ``capture.size``² RGB image with its five landmarks."""
    ss = 2  # supersampling factor
    size = capture.size
    big = size * ss
    unit = ss * size / _REF * capture.scale
    cx = big / 2 + capture.shift[0] * ss
    cy = big / 2 + (51.6 - _REF / 2 - identity.eye_y * capture.scale) * ss * size / _REF + capture.shift[1] * ss
    background = tuple(int(v) for v in capture.background)
    canvas = Image.new("RGB", (big, big), background)
    mask = Image.new("L", (big, big), 0)
    landmarks = _draw_head(ImageDraw.Draw(canvas), ImageDraw.Draw(mask), identity, capture, cx, cy, unit)
    head = _Head(identity, capture, unit)
    pixels = np.asarray(canvas, dtype=np.float32).copy()
    _shade(pixels, np.asarray(mask), capture, cx, cy, head.silhouette_w(), head.h)
    canvas = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    if abs(capture.roll) > 1e-6:
        canvas = canvas.rotate(capture.roll, resample=Image.BILINEAR, center=(cx, cy), fillcolor=background)
        landmarks = _rotate_points(landmarks, capture.roll, cx, cy)
    small = canvas.reduce(ss)
    landmarks = (landmarks + 0.5) / ss - 0.5
    return RenderedFace(finish_image(small, capture.blur, capture.noise, capture.noise_seed), landmarks)
