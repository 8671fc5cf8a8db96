"""Face morphs in the three families of MAD benchmarks (biometric-protocols.md §8).

Aligned pixel blending, landmark-warped blending (piecewise-affine warp to averaged landmarks), and a "latent"
morph that renders the averaged identity parameters with a faint generator upsampling trace (GAN-morph analogue).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from PIL import Image

from overspec.world.faces import Capture, Identity, RenderedFace, finish_image, render_face

__all__ = ["MORPH_METHODS", "morph_blend", "morph_warp", "morph_identity", "render_latent_morph",
           "piecewise_affine_warp"]

MORPH_METHODS = ("blend", "warp", "latent")


def morph_blend(a: RenderedFace, b: RenderedFace, alpha: float = 0.5) -> RenderedFace:
    """Aligned pixel blending: ``(1 - alpha)·a + alpha·b`` without any warping (ghosting at misaligned features)."""
    image = (1 - alpha) * a.image.astype(np.float32) + alpha * b.image.astype(np.float32)
    return RenderedFace(np.clip(np.rint(image), 0, 255).astype(np.uint8),
                        (1 - alpha) * a.landmarks + alpha * b.landmarks)


def _control_points(landmarks: np.ndarray, size: int) -> np.ndarray:
    """Landmarks plus points extrapolated from them (forehead, chin, cheeks) and fixed border points."""
    eyes_mid = landmarks[:2].mean(axis=0)
    mouth_mid = landmarks[3:].mean(axis=0)
    down = mouth_mid - eyes_mid
    across = landmarks[1] - landmarks[0]
    extra = np.array([eyes_mid - 0.9 * down, mouth_mid + 0.45 * down, landmarks[0] - 0.55 * across + 0.5 * down,
                      landmarks[1] + 0.55 * across + 0.5 * down])
    s = size - 1.0
    border = np.array([(0, 0), (s / 2, 0), (s, 0), (s, s / 2), (s, s), (s / 2, s), (0, s), (0, s / 2)], dtype=float)
    return np.concatenate([landmarks, extra, border])


def _bilinear(image: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    h, w = image.shape[:2]
    xs = np.clip(xs, 0, w - 1)
    ys = np.clip(ys, 0, h - 1)
    x0 = np.minimum(np.floor(xs).astype(int), w - 2)
    y0 = np.minimum(np.floor(ys).astype(int), h - 2)
    fx, fy = (xs - x0)[..., None], (ys - y0)[..., None]
    img = image.astype(np.float32)
    top = img[y0, x0] * (1 - fx) + img[y0, x0 + 1] * fx
    bottom = img[y0 + 1, x0] * (1 - fx) + img[y0 + 1, x0 + 1] * fx
    return top * (1 - fy) + bottom * fy


def piecewise_affine_warp(image: np.ndarray, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Warp ``image`` so that points ``src`` land on ``dst`` (affine per Delaunay triangle of ``dst``)."""
    from scipy.spatial import Delaunay  # when a morph is drawn, not whenever the world's layout is read

    h, w = image.shape[:2]
    simplices = Delaunay(dst).simplices
    ys, xs = np.mgrid[0:h, 0:w]
    grid = np.stack([xs.ravel(), ys.ravel()], axis=1).astype(float)
    # barycentric coordinates of every pixel in every triangle, in closed form (scipy's ``transform`` and
    # ``find_simplex`` are far slower for a few dozen triangles)
    v0, v1, v2 = (dst[simplices[:, k]] for k in range(3))
    a, b = v0 - v2, v1 - v2
    det = a[:, 0] * b[:, 1] - b[:, 0] * a[:, 1]
    dx = grid[:, 0:1] - v2[None, :, 0]
    dy = grid[:, 1:2] - v2[None, :, 1]
    b0 = (b[:, 1] * dx - b[:, 0] * dy) / det
    b1 = (a[:, 0] * dy - a[:, 1] * dx) / det
    inside_any = (b0 >= -1e-9) & (b1 >= -1e-9) & (b0 + b1 <= 1.0 + 1e-9)
    inside = inside_any.any(axis=1)
    simplex = np.argmax(inside_any, axis=1)
    rows = np.arange(len(grid))
    bary = np.stack([b0[rows, simplex], b1[rows, simplex]], axis=1)
    bary = np.concatenate([bary, 1.0 - bary.sum(axis=1, keepdims=True)], axis=1)
    corners = src[simplices[simplex]]
    mapped = np.einsum("ni,nij->nj", bary, corners)
    mapped = np.where(inside[:, None], mapped, grid)
    return _bilinear(image, mapped[:, 0].reshape(h, w), mapped[:, 1].reshape(h, w))


def morph_warp(a: RenderedFace, b: RenderedFace, alpha: float = 0.5) -> RenderedFace:
    """Landmark morph: warp both faces to the averaged landmarks (piecewise affine), then blend."""
    size = a.image.shape[0]
    pa, pb = _control_points(a.landmarks, size), _control_points(b.landmarks, size)
    target = (1 - alpha) * pa + alpha * pb
    warped_a = piecewise_affine_warp(a.image, pa, target)
    warped_b = piecewise_affine_warp(b.image, pb, target)
    image = (1 - alpha) * warped_a + alpha * warped_b
    return RenderedFace(np.clip(np.rint(image), 0, 255).astype(np.uint8), target[:5].copy())


def morph_identity(a: Identity, b: Identity, alpha: float = 0.5) -> Identity:
    """Average two identities' parameters (the "latent" morph); boolean traits come from the nearer parent."""
    values = {}
    for name in Identity.__dataclass_fields__:
        x, y = getattr(a, name), getattr(b, name)
        if isinstance(x, bool):
            values[name] = x if alpha < 0.5 else y
        elif isinstance(x, float):
            values[name] = (1 - alpha) * x + alpha * y
        elif name == "moles":
            values[name] = x if alpha < 0.5 else y
        else:
            values[name] = tuple((1 - alpha) * u + alpha * v for u, v in zip(x, y, strict=True))
    return Identity(**values)


def render_latent_morph(a: Identity, b: Identity, capture: Capture, alpha: float = 0.5) -> RenderedFace:
    """Render the averaged identity at half resolution and upsample (a faint generator trace, like GAN morphs)."""
    half = render_face(morph_identity(a, b, alpha), replace(capture, size=capture.size // 2, noise=0.0))
    image = Image.fromarray(half.image).resize((capture.size, capture.size), Image.BILINEAR)
    landmarks = (half.landmarks + 0.5) * 2 - 0.5
    return RenderedFace(finish_image(image, 0.0, capture.noise, capture.noise_seed), landmarks)
