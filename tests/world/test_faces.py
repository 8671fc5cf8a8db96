"""The synthetic face renderer: determinism, landmarks that follow the pixels and the pose, morphs, attacks."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from overspec.world import attacks as A
from overspec.world import faces as F
from overspec.world import morphs as M


def _diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(float) - b.astype(float)).mean())


@pytest.fixture(scope="module")
def people() -> list[F.Identity]:
    return F.make_identities(4, seed=3)


def test_same_seed_same_pixels(people):
    capture = F.sample_capture(np.random.default_rng(5), F.WILD)
    a = F.render_face(F.make_identity(42), capture)
    b = F.render_face(F.make_identity(42), capture)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.landmarks, b.landmarks)
    assert F.make_identities(4, seed=3) == people
    other_noise = F.render_face(F.make_identity(42), replace(capture, noise_seed=capture.noise_seed + 1))
    assert not np.array_equal(a.image, other_noise.image)
    assert a.image.shape == (112, 112, 3) and a.image.dtype == np.uint8
    assert len(set(people)) == 4


def test_landmarks_inside_the_image_and_in_anatomical_order(people):
    rng = np.random.default_rng(0)
    for identity in people:
        for ranges in (F.FRONTAL, F.WILD, F.PASSPORT):
            face = F.render_face(identity, F.sample_capture(rng, ranges))
            lm = face.landmarks
            assert lm.shape == (5, 2)
            assert ((lm >= 0) & (lm <= 111)).all()
            assert lm[0, 0] < lm[1, 0] and lm[3, 0] < lm[4, 0]
            assert lm[:2, 1].max() < lm[2, 1] < lm[3:, 1].min()


def test_landmarks_sit_on_the_drawn_features_even_after_roll(people):
    identity = replace(people[0], glasses=False)
    for roll in (0.0, 20.0, -15.0):
        face = F.render_face(identity, F.Capture(roll=roll, noise=0.0, size=224))
        skin = np.asarray(identity.skin).mean()
        for x, y in face.landmarks[:2]:  # pupils are drawn near-black at the eye landmarks
            assert face.image[int(round(y)), int(round(x))].mean() < 0.5 * skin


def test_landmarks_move_with_pose(people):
    identity = people[1]
    frontal = F.render_face(identity, F.Capture(noise=0.0)).landmarks
    turned = F.render_face(identity, F.Capture(yaw=0.5, noise=0.0)).landmarks
    assert turned[2, 0] - frontal[2, 0] > 5.0  # the nose tip moves towards the turn
    assert (turned[1, 0] - turned[0, 0]) < 0.9 * (frontal[1, 0] - frontal[0, 0])  # eye distance foreshortens
    rolled = F.render_face(identity, F.Capture(roll=12.0, noise=0.0)).landmarks
    dx, dy = rolled[1] - rolled[0]
    assert math.degrees(math.atan2(-dy, dx)) == pytest.approx(12.0, abs=0.5)  # PIL rotates counter-clockwise
    assert not np.allclose(F.render_face(identity, F.Capture(shift=(4.0, 0.0))).landmarks[:, 0] - frontal[:, 0], 0)


def test_identities_differ_more_than_captures_of_one_identity(people):
    rng = np.random.default_rng(1)
    same = [_diff(F.render_face(p, F.sample_capture(rng, F.PASSPORT)).image,
                  F.render_face(p, F.sample_capture(rng, F.PASSPORT)).image) for p in people]
    cross = [_diff(F.render_face(people[i], F.Capture()).image, F.render_face(people[i + 1], F.Capture()).image)
             for i in range(3)]
    assert max(same) < min(cross)


def test_piecewise_affine_warp_identity_and_translation():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (40, 40, 3)).astype(np.uint8)
    src = np.array([(5, 5), (35, 5), (35, 35), (5, 35), (20, 18)], dtype=float)
    np.testing.assert_allclose(M.piecewise_affine_warp(image, src, src), image, atol=1e-4)
    moved = M.piecewise_affine_warp(image, src, src + np.array([2.0, 1.0]))
    np.testing.assert_allclose(moved[15:25, 15:25], image[14:24, 13:23], atol=1e-4)
    np.testing.assert_allclose(moved[0:3, 0:3], image[0:3, 0:3], atol=1e-4)  # outside the hull: unchanged


def test_morphs_differ_from_both_parents(people):
    a, b = people[0], people[2]
    rng = np.random.default_rng(2)
    ca, cb = F.sample_capture(rng, F.PASSPORT), F.sample_capture(rng, F.PASSPORT)
    fa, fb = F.render_face(a, ca), F.render_face(b, cb)
    morphs = {"blend": M.morph_blend(fa, fb), "warp": M.morph_warp(fa, fb), "latent": M.render_latent_morph(a, b, ca)}
    assert set(morphs) == set(M.MORPH_METHODS)
    for name, morph in morphs.items():
        assert morph.image.shape == fa.image.shape and morph.image.dtype == np.uint8, name
        assert _diff(morph.image, fa.image) > 3.0 and _diff(morph.image, fb.image) > 3.0, name
    midpoint = (fa.landmarks + fb.landmarks) / 2
    np.testing.assert_allclose(morphs["blend"].landmarks, midpoint)
    np.testing.assert_allclose(morphs["warp"].landmarks, midpoint)
    np.testing.assert_allclose(M.morph_blend(fa, fb, alpha=0.0).image, fa.image)
    mixed = M.morph_identity(a, b)
    assert mixed.eye_dx == pytest.approx((a.eye_dx + b.eye_dx) / 2)


def test_attack_videos_differ_from_bona_fide_and_move(people):
    style = A.CameraStyle("X", gain=(1.05, 1.0, 0.95), noise=2.0)
    live = A.render_bona_fide_video(people[3], style, seed=9, n_frames=3)
    assert len(live) == 3 and _diff(live[0], live[1]) > 0.5
    assert np.array_equal(live[0], A.render_bona_fide_video(people[3], style, seed=9, n_frames=3)[0])
    for species in A.PAI_SPECIES:
        frames = A.render_attack_video(people[3], species, style, seed=9, n_frames=3)
        assert len(frames) == 3 and frames[0].shape == (112, 112, 3), species
        assert min(_diff(f, g) for f in frames for g in live) > 5.0, species
        assert _diff(frames[0], frames[2]) > 0.5, species
    with pytest.raises(ValueError, match="unknown PAI species 'video'"):
        A.render_attack_video(people[3], "video", style, seed=9)
