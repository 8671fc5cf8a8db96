"""Five-point face alignment to the ArcFace template (insightface ``norm_crop``) in plain numpy.

A least-squares similarity transform (Umeyama 1991, as in skimage ``SimilarityTransform.estimate``) maps the
detected landmarks onto the template; the image is then warped with bilinear sampling and a zero border, matching
``cv2.warpAffine(img, M, (S, S), borderValue=0)`` (pixel centres at integer coordinates). References: insightface
``python-package/insightface/utils/face_align.py``; biometric-protocols.md §3.
"""

from __future__ import annotations

import numpy as np
from PIL import Image
from overspec.errors import InputError

__all__ = ["ARCFACE_TEMPLATE_112", "arcface_template", "umeyama_similarity", "warp_affine", "align_face"]

#: Destination points (x, y) for a 112×112 crop: left eye, right eye, nose tip, left and right mouth corners
#: ("left" = image left).
ARCFACE_TEMPLATE_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float64,
)


def arcface_template(size: int = 112) -> np.ndarray:
    """Return the 5×2 ArcFace template for an ``size``×``size`` crop (insightface's 112- and 128-multiple rules)."""
    if size % 112 == 0:
        return ARCFACE_TEMPLATE_112 * (size / 112)
    if size % 128 == 0:
        scaled = ARCFACE_TEMPLATE_112 * (size / 128)
        scaled[:, 0] += 8.0 * size / 128
        return scaled
    raise InputError(f"alignment size must be a multiple of 112 or 128, got {size}")


def umeyama_similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Return the 3×3 similarity matrix (rotation, uniform scale, translation) that best maps ``src`` onto ``dst``.

    Least squares over N×2 point sets (Umeyama 1991, with the reflection correction).
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or src.shape[0] < 2:
        raise InputError(f"need two matching N×2 point sets (N >= 2), got {src.shape} and {dst.shape}")
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    covariance = dst_c.T @ src_c / src.shape[0]
    u, singular, vt = np.linalg.svd(covariance)
    signs = np.ones(2)
    if np.linalg.det(covariance) < 0:
        signs[-1] = -1.0
    rotation = u @ np.diag(signs) @ vt
    src_variance = src_c.var(axis=0).sum()
    if src_variance == 0:
        raise InputError("source points are all identical; no similarity transform is defined")
    scale = float(singular @ signs) / src_variance
    matrix = np.eye(3)
    matrix[:2, :2] = scale * rotation
    matrix[:2, 2] = dst_mean - scale * rotation @ src_mean
    return matrix


def warp_affine(image: np.ndarray, matrix: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Warp an H×W(×C) array with the forward 2×3/3×3 ``matrix`` into a ``(width, height)`` output.

    Output pixel (x, y) samples the input at ``matrix⁻¹ · (x, y)`` bilinearly; outside pixels count as 0.
    """
    array = np.asarray(image)
    width, height = size
    forward = np.vstack([np.asarray(matrix, dtype=np.float64)[:2], [0.0, 0.0, 1.0]])
    inverse = np.linalg.inv(forward)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    src_x = inverse[0, 0] * xs + inverse[0, 1] * ys + inverse[0, 2]
    src_y = inverse[1, 0] * xs + inverse[1, 1] * ys + inverse[1, 2]
    sampled = _bilinear_sample(array, src_x, src_y)
    if array.dtype == np.uint8:
        return np.clip(np.rint(sampled), 0, 255).astype(np.uint8)
    return sampled.astype(array.dtype)


def _bilinear_sample(array: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Sample ``array`` at float coordinates with bilinear weights and a constant zero border."""
    data = array.astype(np.float64)
    if data.ndim == 2:
        data = data[:, :, None]
    height, width = data.shape[:2]
    x0, y0 = np.floor(x).astype(np.int64), np.floor(y).astype(np.int64)
    fx, fy = (x - x0)[..., None], (y - y0)[..., None]
    out = np.zeros(x.shape + (data.shape[2],))
    for dy, wy in ((0, 1 - fy), (1, fy)):
        for dx, wx in ((0, 1 - fx), (1, fx)):
            xi, yi = x0 + dx, y0 + dy
            inside = (xi >= 0) & (xi < width) & (yi >= 0) & (yi < height)
            values = np.zeros_like(out)
            values[inside] = data[yi[inside], xi[inside]]
            out += wx * wy * values
    return out if array.ndim == 3 else out[..., 0]


def align_face(image: Image.Image | np.ndarray, landmarks: np.ndarray, size: int = 112) -> Image.Image:
    """Return the ``size``×``size`` RGB face crop whose five ``landmarks`` (5×2, x, y) land on the ArcFace template."""
    array = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image)
    points = np.asarray(landmarks, dtype=np.float64).reshape(5, 2)
    matrix = umeyama_similarity(points, arcface_template(size))
    return Image.fromarray(warp_affine(array, matrix, (size, size)))
