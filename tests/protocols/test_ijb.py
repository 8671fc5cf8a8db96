"""IJB protocol: N1D1F1 pooling by hand, streaming pair scores, TAR@FAR rules, 1:N per gallery, end to end."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_curve

from overspec.data.biometric.align import ARCFACE_TEMPLATE_112
from overspec.data.formats.ijb import IJBFace, IJBMeta, read_ijb_meta, write_ijb_meta
from overspec.protocols.ijb import (
    IJB_FARS,
    evaluate_ijb,
    evaluate_ijb_identification,
    evaluate_ijb_verification,
    image_features,
    pool_templates,
    score_pair_chunks,
    score_template_pairs,
)


def _hand_case():
    """biometric-protocols.md §4.3: template A = a1, a2 (media 10), a3 (media 11); template B = b1 (media 20)."""
    feats = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 2], [1, 1, 0]], dtype=np.float64)
    scores = np.array([1.0, 0.5, 0.8, 0.9])
    return feats, scores, np.array([1, 1, 1, 2]), np.array([10, 10, 11, 20])


def test_pooling_matches_the_hand_worked_case():
    feats, det, tids, mids = _hand_case()
    # flip pass carries a third of each feature, so F1 (e + e_flip) restores it
    templates = pool_templates(image_features(feats * 2 / 3, feats / 3, det), tids, mids)
    np.testing.assert_array_equal(templates.ids, [1, 2])
    # media 10 -> mean((1, 0, 0), (0, 0.5, 0)) = (0.5, 0.25, 0); media 11 -> (0, 0, 1.6); A = their normalised sum
    np.testing.assert_allclose(templates.features[0], [0.29501, 0.14751, 0.94404], atol=1e-5)
    np.testing.assert_allclose(templates.features[1], [0.70711, 0.70711, 0.0], atol=1e-5)
    score = score_template_pairs(templates, np.array([1]), np.array([2]))
    assert score[0] == pytest.approx(0.31291, abs=1e-5)
    assert abs(score[0] - 0.54339) > 0.2  # what averaging all three images of A would give


def test_pooling_is_order_free_and_sums_media():
    feats, det, tids, mids = _hand_case()
    order = np.array([3, 2, 0, 1])
    shuffled = pool_templates(image_features(feats[order], None, det[order]), tids[order], mids[order])
    np.testing.assert_allclose(shuffled.features, pool_templates(image_features(feats, None, det), tids, mids).features)
    # Second hand case: two media of one frame each are summed, not averaged: (3, 0) + (0, 4) -> (0.6, 0.8)
    two = pool_templates(np.array([[3.0, 0.0], [0.0, 4.0]]), np.array([5, 5]), np.array([1, 2]))
    np.testing.assert_allclose(two.features, [[0.6, 0.8]])
    # ... while frames of one media are averaged first: mean((3, 0), (0, 4)) + (1, 0) = (2.5, 2) / |.|
    three = pool_templates(np.array([[3.0, 0.0], [0.0, 4.0], [1.0, 0.0]]), np.array([5, 5, 5]), np.array([1, 1, 2]))
    np.testing.assert_allclose(three.features, [[2.5 / 41**0.5 * 2, 2 / 41**0.5 * 2]], rtol=1e-6)


def test_image_features_options():
    emb, flip = np.array([[3.0, 4.0]]), np.array([[3.0, 4.0]])
    np.testing.assert_allclose(image_features(emb, flip, np.array([0.5])), [[3.0, 4.0]])
    np.testing.assert_allclose(image_features(emb, flip, np.array([0.5]), normalise=True), [[0.3, 0.4]])
    with pytest.raises(ValueError, match="det_scores"):
        image_features(emb, None, np.array([0.5, 0.5]))


def test_streaming_scores_equal_the_dense_computation(monkeypatch):
    monkeypatch.setattr("overspec.protocols.ijb._BLOCK_ROWS", 3)  # many blocks, the last one partial
    rng = np.random.default_rng(1)
    tids = rng.permutation(np.arange(100, 140))
    templates = pool_templates(rng.normal(size=(40, 16)), tids, np.arange(40))
    t1, t2 = rng.choice(tids, 1003), rng.choice(tids, 1003)
    dense = templates.features[np.searchsorted(templates.ids, t1)] @ templates.features.T
    expected = dense[np.arange(1003), np.searchsorted(templates.ids, t2)]
    for method in ("gather", "blocks", "auto"):
        scores = score_template_pairs(templates, t1, t2, chunk_size=7, method=method)
        np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-6)
    chunks = [(t1[i:i + 100], t2[i:i + 100]) for i in range(0, 1003, 100)]
    np.testing.assert_allclose(np.concatenate(list(score_pair_chunks(templates, chunks))), expected, atol=1e-6)
    with pytest.raises(KeyError, match="unknown template id 7"):
        score_template_pairs(templates, np.array([100, 7]), np.array([101, 102]))
    assert score_template_pairs(templates, t1[:0], t2[:0]).shape == (0,)
    with pytest.raises(ValueError, match="method must be"):
        score_template_pairs(templates, t1, t2, method="dense")


def _synthetic_ijb(seed: int, n_templates: int = 60, dim: int = 12):
    """Per-image embeddings of templates drawn around subject centres, plus genuine and impostor pairs."""
    rng = np.random.default_rng(seed)
    subjects = rng.integers(0, 15, size=n_templates)
    centres = rng.normal(size=(15, dim))
    per_template = rng.integers(1, 4, size=n_templates)
    tids = np.repeat(np.arange(1, n_templates + 1), per_template)
    mids = np.repeat(rng.integers(0, 5, size=n_templates), per_template) * 1000 + np.arange(tids.size) % 2
    emb = centres[subjects[tids - 1]] + rng.normal(0, 1.2, size=(tids.size, dim))
    flip = emb + rng.normal(0, 0.1, size=emb.shape)
    det = rng.uniform(0.2, 1.0, size=tids.size)
    t1, t2 = np.triu_indices(n_templates, k=1)
    labels = (subjects[t1] == subjects[t2]).astype(int)
    return emb, flip, det, tids, mids, t1 + 1, t2 + 1, labels, subjects


def test_verification_tar_matches_insightface_and_at_most_rules():
    emb, flip, det, tids, mids, t1, t2, labels, _ = _synthetic_ijb(2)
    result = evaluate_ijb_verification(emb, flip, det, tids, mids, t1, t2, labels, chunk_size=64)
    templates = pool_templates(image_features(emb, flip, det), tids, mids)
    scores = score_template_pairs(templates, t1, t2)
    fpr, tpr, _ = roc_curve(labels, scores)  # insightface eval_ijbc.py: reversed arrays, nearest FPR
    fpr_full, tpr_full, _ = roc_curve(labels, scores, drop_intermediate=False)
    for far in IJB_FARS:
        nearest = tpr[::-1][np.argmin(np.abs(fpr[::-1] - far))]
        assert result["tar_at_far"]["nearest"][far] == pytest.approx(nearest)
        at_most = tpr_full[np.flatnonzero(fpr_full <= far)[-1]]
        assert result["tar_at_far"]["at_most"][far] == pytest.approx(at_most)
    assert result["num_genuine"] == labels.sum() and result["num_impostor"] == (1 - labels).sum()
    assert result["unreachable_fars"] == [f for f in IJB_FARS if f < 1 / (1 - labels).sum()]


def test_identification_by_hand():
    # templates 1..5 on the unit circle; gallery G1 = {1: subject 10, 2: subject 20}, G2 = {3: subject 30}
    angles = {1: 0.0, 2: 1.5, 3: 3.0, 4: 0.2, 5: 1.0}
    tids = np.array(list(angles))
    feats = np.column_stack([np.cos(list(angles.values())), np.sin(list(angles.values()))])
    templates = pool_templates(feats, tids, tids)
    galleries = {"G1": (np.array([1, 2]), np.array([10, 20])), "G2": (np.array([3]), np.array([30]))}
    # probe 4 (subject 10) is mated in G1 (mate template 1: cos .2 = .980 > cos 1.3 = .267 for template 2) and
    # non-mated in G2; probe 5 (subject 30) is non-mated in G1 and mated in G2 (its only entry, template 3)
    result = evaluate_ijb_identification(templates, galleries, (np.array([4, 5]), np.array([10, 30])), ranks=(1, 2))
    g1, g2 = result["per_gallery"]["G1"], result["per_gallery"]["G2"]
    assert (g1["num_mated"], g1["num_nonmated"], g2["num_mated"], g2["num_nonmated"]) == (1, 1, 1, 1)
    assert g1["rank"] == {1: 1.0, 2: 1.0}
    assert g2["rank"] == {1: 1.0, 2: 1.0}  # one entry in G2: its only template is the mate
    assert result["rank"] == {1: 1.0, 2: 1.0}
    # G1: non-mated probe 5 scores max cos(0.5) = .878 against template 2; mated probe 4 scores cos(0.2) = .980
    # > .878, so it is detected at any FPIR; G2: non-mated probe 4 scores cos(2.8) = -.942, mate probe 5 cos(2.0)
    # = -.416 > -.942, detected too.
    assert result["tpir_at_fpir"] == {0.01: 1.0, 0.1: 1.0}


def test_identification_counts_misses():
    tids = np.array([1, 2, 3, 4, 5])
    feats = np.array([[1.0, 0.0], [0.0, 1.0], [0.1, 1.0], [1.0, 0.05], [-1.0, 0.0]])
    templates = pool_templates(feats, tids, tids)
    galleries = {"G1": (np.array([1, 2]), np.array([10, 20]))}
    # probe 3 (subject 10) is closest to template 2 (subject 20): a miss at rank 1, a hit at rank 2;
    # probe 4 (subject 20) is closest to template 1: a miss at rank 1; probe 5 (subject 99) is non-mated
    result = evaluate_ijb_identification(
        templates, galleries, (np.array([3, 4, 5]), np.array([10, 20, 99])), ranks=(1, 2)
    )
    assert result["rank"] == {1: 0.0, 2: 1.0}
    assert result["tpir_at_fpir"] == {0.01: 0.0, 0.1: 0.0}  # no mated probe is at rank 1


def test_end_to_end_from_a_written_meta_folder(tmp_path):
    emb, flip, det, tids, mids, t1, t2, labels, subjects = _synthetic_ijb(4, n_templates=12, dim=6)
    rng = np.random.default_rng(0)
    faces = [IJBFace(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8), ARCFACE_TEMPLATE_112 / 3, float(s), int(t),
                     int(m), int(subjects[t - 1])) for s, t, m in zip(det, tids, mids)]
    gallery_g1 = [t for t in range(1, 13) if subjects[t - 1] % 2 == 0][:3]
    probes = [t for t in range(1, 13) if t not in gallery_g1]
    root = write_ijb_meta(tmp_path / "IJBC", "ijbc", faces, np.column_stack([t1, t2, labels]),
                          galleries={"G1": gallery_g1}, probes=probes)
    meta = read_ijb_meta(root)
    result = evaluate_ijb(meta, np.stack([emb, flip], axis=1))
    det_written = np.round(det, 6)  # the score file stores six decimals
    direct = evaluate_ijb_verification(emb, flip, det_written, tids, mids, t1, t2, labels)
    for rule, values in direct["tar_at_far"].items():
        assert result["verification"]["tar_at_far"][rule] == pytest.approx(values)
    identification = result["identification"]["mixed"]
    assert set(identification["per_gallery"]) == {"G1"}
    # brute force rank-1 over the mated probes of G1
    templates = pool_templates(image_features(emb, flip, det_written), tids, mids)
    gallery_subjects = subjects[np.asarray(gallery_g1) - 1]
    mated = [t for t in probes if subjects[t - 1] in gallery_subjects]
    best = [gallery_subjects[np.argmax(templates.features[np.asarray(gallery_g1) - 1] @ templates.features[t - 1])]
            for t in mated]
    expected = np.mean([b == subjects[t - 1] for b, t in zip(best, mated)])
    assert identification["rank"][1] == pytest.approx(expected)
    assert identification["per_gallery"]["G1"]["num_mated"] == len(mated)


def _pooled_by_hand(feats, det, tids, mids):
    """Independent N1D1F1 pooling: dict of (template, media) -> frames, mean per media, sum, normalise."""
    groups: dict = {}
    for f, d, t, m in zip(feats, det, tids, mids):
        groups.setdefault(int(t), {}).setdefault(int(m), []).append(np.asarray(f, np.float64) * d)
    pooled = {}
    for t, media in groups.items():
        total = sum(np.mean(frames, axis=0) for frames in media.values())
        pooled[t] = total / np.linalg.norm(total)
    return pooled


def test_streamed_path_from_a_mapped_store_entry_equals_a_direct_computation(tmp_path, monkeypatch):
    from overspec.features._files import read_entry, write_array

    monkeypatch.setattr("overspec.protocols.ijb._FACE_BLOCK_ROWS", 7)  # many blocks, faces of a template split
    emb, flip, det, tids, mids, t1, t2, labels, _ = _synthetic_ijb(5, n_templates=30, dim=8)
    stored = np.zeros((emb.shape[0] + 3, 2, emb.shape[1]), np.float32)  # 3 extra rows stand for skipped faces
    rows = np.sort(np.random.default_rng(0).choice(stored.shape[0], emb.shape[0], replace=False))
    stored[rows, 0], stored[rows, 1] = emb, flip
    write_array(tmp_path / "x.npy", stored, {})
    mapped, _ = read_entry(tmp_path / "x.npy")
    assert isinstance(mapped, np.memmap)
    meta = IJBMeta(tmp_path, "ijbc", tuple(f"{i}.jpg" for i in range(emb.shape[0])), tids, mids,
                   np.zeros((emb.shape[0], 5, 2), np.float32), det.astype(np.float32), t1.astype(np.int32),
                   t2.astype(np.int32), labels.astype(np.int8))
    result = evaluate_ijb(meta, mapped, rows)["verification"]
    by_hand = _pooled_by_hand(stored[rows, 0] + stored[rows, 1], det.astype(np.float32), tids, mids)
    scores = np.array([by_hand[a] @ by_hand[b] for a, b in zip(t1, t2)])
    fpr, tpr, _ = roc_curve(labels, scores)
    for far in IJB_FARS:
        assert result["tar_at_far"]["nearest"][far] == pytest.approx(tpr[::-1][np.argmin(np.abs(fpr[::-1] - far))])
    templates = pool_templates(image_features(emb, flip, det), tids, mids)
    for t, vector in by_hand.items():
        np.testing.assert_allclose(templates.features[np.searchsorted(templates.ids, t)], vector, atol=2e-7)


def test_float32_scores_give_the_float64_tar_at_far():
    rng = np.random.default_rng(3)
    scores = rng.normal(size=20000).astype(np.float32)
    labels = rng.random(20000) < 0.05
    scores[labels] += 1.5
    from overspec.protocols.ijb import tar_at_fars

    compact = tar_at_fars(scores, labels, IJB_FARS, ("nearest", "at_most"))
    wide = tar_at_fars(scores.astype(np.float64), labels, IJB_FARS, ("nearest", "at_most"))
    assert compact == wide


@pytest.mark.parametrize("chunk", [1, 3, 1 << 20])
def test_grouped_order_is_the_stable_argsort(monkeypatch, chunk):
    from overspec.protocols import ijb

    monkeypatch.setattr(ijb, "_ORDER_CHUNK", chunk)
    rows = np.random.default_rng(0).integers(0, 9, 200).astype(np.int32)
    counts = np.bincount(rows, minlength=12)
    order = ijb._grouped_order(rows, counts)
    np.testing.assert_array_equal(order, np.argsort(rows, kind="stable"))
    assert order.dtype == np.int32
