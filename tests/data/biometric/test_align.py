"""Five-point alignment: Umeyama estimate, bilinear warp geometry, and the ArcFace template."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from overspec.data.biometric.align import (
    ARCFACE_TEMPLATE_112,
    align_face,
    arcface_template,
    umeyama_similarity,
    warp_affine,
)


def _similarity(angle_deg: float, scale: float, tx: float, ty: float) -> np.ndarray:
    a = np.deg2rad(angle_deg)
    return np.array([[scale * np.cos(a), -scale * np.sin(a), tx], [scale * np.sin(a), scale * np.cos(a), ty], [0, 0, 1]])


def _apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ matrix[:2, :2].T + matrix[:2, 2]


def test_exact_similarity_is_recovered():
    known = _similarity(23.0, 0.62, 14.5, -7.25)
    src = _apply(np.linalg.inv(known), ARCFACE_TEMPLATE_112)
    np.testing.assert_allclose(umeyama_similarity(src, ARCFACE_TEMPLATE_112), known, atol=1e-10)


def test_noisy_points_give_the_linear_least_squares_similarity():
    rng = np.random.default_rng(3)
    src = rng.uniform(0, 200, size=(5, 2))
    dst = _apply(_similarity(-40.0, 1.7, 3.0, 9.0), src) + rng.normal(0, 2.0, size=(5, 2))
    # Independent solution: x' = a x - b y + tx, y' = b x + a y + ty is linear in (a, b, tx, ty).
    rows = np.concatenate([
        np.column_stack([src[:, 0], -src[:, 1], np.ones(5), np.zeros(5)]),
        np.column_stack([src[:, 1], src[:, 0], np.zeros(5), np.ones(5)]),
    ])
    a, b, tx, ty = np.linalg.lstsq(rows, np.concatenate([dst[:, 0], dst[:, 1]]), rcond=None)[0]
    expected = np.array([[a, -b, tx], [b, a, ty], [0, 0, 1]])
    np.testing.assert_allclose(umeyama_similarity(src, dst), expected, atol=1e-9)


def test_umeyama_rejects_degenerate_input():
    with pytest.raises(ValueError, match="identical"):
        umeyama_similarity(np.ones((5, 2)), ARCFACE_TEMPLATE_112)
    with pytest.raises(ValueError, match="matching"):
        umeyama_similarity(np.ones((4, 2)), ARCFACE_TEMPLATE_112)


def test_integer_translation_shifts_pixels_and_pads_with_zero():
    image = np.arange(1, 1 + 6 * 8 * 3, dtype=np.uint8).reshape(6, 8, 3)
    out = warp_affine(image, _similarity(0, 1, 2, 1), (8, 6))
    np.testing.assert_array_equal(out[1:, 2:], image[:-1, :-2])
    assert (out[0] == 0).all() and (out[:, :2] == 0).all()


def test_bilinear_warp_is_exact_on_an_affine_ramp():
    ys, xs = np.mgrid[0:80, 0:80].astype(np.float64)
    ramp = 0.7 * xs - 0.3 * ys + 5.0
    matrix = _similarity(30.0, 1.25, 10.0, -20.0)
    out = warp_affine(ramp, matrix, (60, 60))
    oy, ox = np.mgrid[0:60, 0:60].astype(np.float64)
    inverse = np.linalg.inv(matrix)
    sx = inverse[0, 0] * ox + inverse[0, 1] * oy + inverse[0, 2]
    sy = inverse[1, 0] * ox + inverse[1, 1] * oy + inverse[1, 2]
    inside = (sx >= 0) & (sx <= 79) & (sy >= 0) & (sy <= 79)
    assert inside.sum() > 1000
    np.testing.assert_allclose(out[inside], (0.7 * sx - 0.3 * sy + 5.0)[inside], atol=1e-9)


def test_template_sizes_follow_insightface_rules():
    np.testing.assert_allclose(arcface_template(224), ARCFACE_TEMPLATE_112 * 2)
    expected_128 = ARCFACE_TEMPLATE_112.copy()
    expected_128[:, 0] += 8.0
    np.testing.assert_allclose(arcface_template(128), expected_128)
    with pytest.raises(ValueError, match="multiple of 112 or 128"):
        arcface_template(100)


def test_align_face_puts_landmarks_on_the_template():
    ys, xs = np.mgrid[0:112, 0:112].astype(np.float64)
    canonical = np.zeros((112, 112))
    for x, y in ARCFACE_TEMPLATE_112:
        canonical += 255 * np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * 1.5**2))
    placement = _similarity(-17.0, 1.8, 60.0, 25.0)
    loose = warp_affine(canonical, placement, (260, 260))
    loose_rgb = np.clip(np.repeat(loose[..., None], 3, axis=2), 0, 255).astype(np.uint8)
    aligned = np.asarray(align_face(Image.fromarray(loose_rgb), _apply(placement, ARCFACE_TEMPLATE_112)))
    assert aligned.shape == (112, 112, 3)
    channel = aligned[..., 0].astype(np.float64)
    for x, y in ARCFACE_TEMPLATE_112:
        window = (np.abs(xs - x) < 5) & (np.abs(ys - y) < 5)
        weights = channel * window
        centroid = (weights * xs).sum() / weights.sum(), (weights * ys).sum() / weights.sum()
        np.testing.assert_allclose(centroid, (x, y), atol=0.3)
