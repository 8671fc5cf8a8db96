"""MAD / PAD evaluation: the three scoring methods and the metric conventions on hand-worked scores."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_curve

from overspec.data.base import LabelledImages
from overspec.protocols.attack_detection import (
    AttackScores, evaluate_own_head, evaluate_probe, evaluate_scores, evaluate_zero_shot, probe_scores,
    zero_shot_scores,
)

# biometric-protocols.md §10.5: 10 bona fide, 10 print, 10 replay; higher = bona fide.
BONA = [0.9, 0.8, 0.75, 0.7, 0.65, 0.6, 0.55, 0.5, 0.45, 0.4]
PRINT = [0.1, 0.2, 0.3, 0.35, 0.45, 0.5, 0.62, 0.05, 0.15, 0.25]
REPLAY = [0.3, 0.4, 0.52, 0.58, 0.66, 0.72, 0.2, 0.1, 0.33, 0.44]


def _scores(bona, attacks: dict[str, list[float]], videos: list[str] | None = None) -> AttackScores:
    scores = list(bona) + [s for values in attacks.values() for s in values]
    labels = [1] * len(bona) + [0] * (len(scores) - len(bona))
    types = [""] * len(bona) + [name for name, values in attacks.items() for _ in values]
    ids = videos or [f"v{i}" for i in range(len(scores))]
    return AttackScores(np.array(scores), np.array(labels), np.array(types, dtype=object), np.array(ids, dtype=object))


REFERENCE = _scores(BONA, {"print": PRINT, "replay": REPLAY})


def test_mad_metrics_on_the_reference_example():
    result = evaluate_own_head("ref", "mad", REFERENCE)
    m = result.metrics
    assert result.scoring == "own_head" and result.level == "frame"
    assert (result.n_bona_fide, result.n_attack) == (10, 20)
    assert m["auc"] == pytest.approx(0.8475)
    assert m["d_eer"] == pytest.approx(0.25)
    assert m["eer_bob"] == pytest.approx(0.275)
    assert [m[f"bpcer@apcer{p}"] for p in (1, 10, 20)] == pytest.approx([0.7, 0.5, 0.3])
    assert [m[f"bpcer@apcer{p}_nearest"] for p in (1, 10, 20)] == pytest.approx([1.0, 0.6, 0.4])
    assert [m[f"apcer@bpcer{p}"] for p in (1, 10, 20)] == pytest.approx([0.45, 0.35, 0.30])
    assert [m[f"apcer@bpcer{p}_nearest"] for p in (1, 10)] == pytest.approx([1.0, 0.4])
    assert "bpcer@apcer1" in result.unreachable and "apcer@bpcer1" in result.unreachable  # 1 % < 1 / 20, 1 / 10
    assert "bpcer@apcer10" not in result.unreachable
    assert set(m) >= {"d_eer[print]", "d_eer[replay]", "d_eer_average", "d_eer_worst"}
    assert m["d_eer_average"] == pytest.approx((m["d_eer[print]"] + m["d_eer[replay]"]) / 2)
    assert m["d_eer_worst"] == max(m["d_eer[print]"], m["d_eer[replay]"])
    for name, attack in (("print", PRINT), ("replay", REPLAY)):  # SMDD's rule written out with scikit-learn
        fpr, tpr, _ = roc_curve([1] * 10 + [0] * 10, BONA + attack)
        assert m[f"d_eer[{name}]"] == pytest.approx(fpr[np.argmin(np.abs(tpr + fpr - 1))])
    assert "nearest" in result.conventions["bpcer@apcer10_nearest"]


def test_pad_metrics_on_the_reference_example():
    result = evaluate_own_head("ref", "pad", REFERENCE)  # every frame its own video
    m = result.metrics
    assert result.level == "video"
    assert m["hter_test_eer"] == pytest.approx(0.275)  # FoundPAD: APCER .25, BPCER .30 at t = .52
    assert m["threshold"] == pytest.approx(0.52)
    assert (m["apcer[print]"], m["apcer[replay]"], m["apcer_ap"], m["bpcer"]) == pytest.approx((0.1, 0.4, 0.4, 0.3))
    assert m["acer"] == pytest.approx(0.35)
    assert "hter_dev" not in m and "test" in result.conventions["apcer_ap"]
    with_dev = evaluate_own_head("ref", "pad", REFERENCE, dev=REFERENCE).metrics
    assert with_dev["threshold"] == pytest.approx(0.51)  # bob EER threshold of the dev scores
    assert with_dev["hter_dev"] == pytest.approx(0.275)
    assert (with_dev["apcer[print]"], with_dev["apcer[replay]"], with_dev["bpcer"]) == pytest.approx((0.1, 0.4, 0.3))


def test_separable_scores_give_zero_errors():
    data = _scores([0.9, 0.8, 0.7], {"warp": [0.1, 0.2], "blend": [0.3, 0.05]})
    mad = evaluate_scores("sep", "mad", "own_head", data).metrics
    assert mad["d_eer"] == 0.0 and mad["auc"] == 1.0 and mad["d_eer_worst"] == 0.0
    assert mad["bpcer@apcer20"] == 0.0 and mad["apcer@bpcer20"] == 0.0
    pad = evaluate_scores("sep", "pad", "own_head", data).metrics
    assert pad["hter_test_eer"] == 0.0 and pad["acer"] == 0.0


def test_pad_averages_frames_per_video_before_scoring():
    videos = ["b1", "b1", "b2", "b2", "a1", "a1", "a2", "a2"]
    data = _scores([0.9, 0.1, 0.8, 0.6], {"print": [0.5, 0.5, 0.3, 0.2]}, videos)
    video = evaluate_scores("v", "pad", "own_head", data)
    assert (video.level, video.n_bona_fide, video.n_attack) == ("video", 2, 2)
    # video scores: bona fide 0.5, 0.7; attack 0.5, 0.25 -> AUC = (0.5 + 1 + 1 + 1) / 4
    assert video.metrics["auc"] == pytest.approx(0.875)
    frame = evaluate_scores("v", "pad", "own_head", data, video_level=False)
    assert frame.level == "frame" and frame.n_bona_fide == 4
    assert frame.metrics["auc"] == pytest.approx(12 / 16)  # frame pairs: 0.9, 0.8, 0.6 beat all; 0.1 none


def test_probe_separates_clusters_and_matches_an_explicitly_weighted_fit():
    rng = np.random.default_rng(0)
    bona = rng.normal(0, 0.3, (12, 4)) + np.array([3.0, 0, 0, 1.0])
    attack = rng.normal(0, 0.3, (36, 4)) + np.array([0, 3.0, 0, 1.0])
    x = np.vstack([bona, attack])
    y = np.array([1] * 12 + [0] * 36)
    test = _scores([0.0] * 12, {"mask": [0.0] * 36})
    result = evaluate_probe("p", "mad", x, y, x, test, seed=0)
    assert result.scoring == "probe" and result.metrics["d_eer"] == 0.0
    # class_weight="balanced" equals sample weights n / (2 n_class) on the L2-normalised features
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    weights = np.where(y == 1, 48 / 24, 48 / 72)
    reference = LogisticRegression(C=1.0, max_iter=2000).fit(xn, y, sample_weight=weights).predict_proba(xn)[:, 1]
    np.testing.assert_allclose(probe_scores(x, y, x, seed=0), reference, atol=1e-4)
    with pytest.raises(ValueError, match="needs bona fide"):
        probe_scores(x[:12], y[:12], x)


def test_zero_shot_probability_of_the_real_face_prompt():
    classifier = np.array([[1.0, 0.0], [0.0, 1.0]])  # columns: attack prompt, bona fide prompt
    angles = np.array([0.1, 0.7, 1.2])
    features = 3.0 * np.stack([np.cos(angles), np.sin(angles)], axis=1)  # scaled: normalised inside
    expected = 1.0 / (1.0 + np.exp(100.0 * (np.cos(angles) - np.sin(angles))))
    np.testing.assert_allclose(zero_shot_scores(features, classifier), expected, rtol=1e-5, atol=1e-12)
    test = _scores([0.0, 0.0], {"print": [0.0, 0.0]}, ["b1", "b2", "a1", "a2"])
    feats = np.array([[math.cos(1.4), math.sin(1.4)], [0.2, 0.9], [0.9, 0.1], [1.0, 0.3]])
    result = evaluate_zero_shot("z", "pad", feats, classifier, test)
    assert result.scoring == "zero_shot" and result.metrics["hter_test_eer"] == 0.0
    assert all(row["scoring"] == "zero_shot" for row in result.rows())
    with pytest.raises(ValueError, match="needs >= 2 columns"):
        zero_shot_scores(feats, classifier[:, :1])


def test_scores_from_a_protocol_split_and_input_errors():
    split = LabelledImages("d", "test", np.array([1, 0, 0]), read=lambda i: None, identity=(),
                           info={"attack_type": np.array(["", "print", "mask"], dtype=object),
                                 "video_id": np.array(["x", "y", "z"], dtype=object)})
    data = AttackScores.of(split, [0.9, 0.2, 0.4])
    assert data.attack_types.tolist() == ["", "print", "mask"] and data.bona_fide.tolist() == [0.9]
    result = evaluate_own_head("d", "pad", data)
    assert set(k for k in result.metrics if k.startswith("apcer[")) == {"apcer[mask]", "apcer[print]"}
    with pytest.raises(ValueError, match="unknown scoring 'head'"):
        evaluate_scores("d", "pad", "head", data)
    with pytest.raises(ValueError, match="unknown task 'fr'"):
        evaluate_scores("d", "fr", "probe", data)
    with pytest.raises(ValueError, match="must have the same length"):
        AttackScores.of(split, [0.1, 0.2])
    with pytest.raises(ValueError, match="NaN"):
        AttackScores.of(split, [0.1, float("nan"), 0.3])


def _smdd_points(bona, attack, op):
    """SMDD / MADation get_apcer_op (first index) and get_bpcer_op (last index) on scikit-learn's default ROC."""
    apcer, tpr, _ = roc_curve([1] * len(bona) + [0] * len(attack), list(bona) + list(attack))
    bpcer = 1 - tpr
    first = np.where(abs(apcer - op) == np.min(abs(apcer - op)))[0][0]
    last = np.where(abs(bpcer - op) == np.min(abs(bpcer - op)))[0][-1]
    return bpcer[first], apcer[last]


def test_mad_per_attack_operating_points_under_each_rule():
    from overspec import metrics

    result = evaluate_own_head("ref", "mad", REFERENCE)
    m, details = result.metrics, {row["metric"]: row["details"] for row in result.rows()}
    for name, attack in (("print", PRINT), ("replay", REPLAY)):
        for rule, suffix in (("at_most", ""), ("nearest", "_nearest"), ("bob", "_bob")):
            bpcer = metrics.bpcer_at_apcer(BONA, attack, [0.01, 0.1, 0.2], rule=rule).value
            apcer = metrics.apcer_at_bpcer(BONA, attack, [0.01, 0.1, 0.2], rule=rule).value
            for k, pct in enumerate((1, 10, 20)):
                assert m[f"bpcer@apcer{pct}{suffix}[{name}]"] == bpcer[k]
                assert m[f"apcer@bpcer{pct}{suffix}[{name}]"] == apcer[k]
                assert details[f"bpcer@apcer{pct}{suffix}[{name}]"] == {
                    "rule": rule, "operating_point": pct / 100, "attack_type": name}
        for pct in (1, 10):  # MADation's code on this method's list (all bona fide + its morphs)
            bpcer, apcer = _smdd_points(BONA, attack, pct / 100)
            assert m[f"bpcer@apcer{pct}_nearest[{name}]"] == pytest.approx(bpcer)
            assert m[f"apcer@bpcer{pct}_nearest[{name}]"] == pytest.approx(apcer)
        assert details[f"d_eer[{name}]"] == {"attack_type": name}
    assert details["bpcer@apcer10"] == {"rule": "at_most", "operating_point": 0.1}
    assert [m[f"bpcer@apcer{p}_bob"] for p in (1, 10, 20)] == pytest.approx([0.7, 0.6, 0.4])  # reference §10.5
    assert "bpcer@apcer1_bob[print]" in result.unreachable  # 1 % < 1 / 10 morphs
    assert "bob" in result.conventions["apcer@bpcer20_bob"]


def test_mad_new_records_come_after_the_original_ones_unchanged():
    names = list(evaluate_own_head("ref", "mad", REFERENCE).metrics)
    original = ["d_eer", "eer_bob", "auc"] + [f"{stem}{p}{suffix}" for suffix in ("", "_nearest") for p in (1, 10, 20)
                                             for stem in ("bpcer@apcer", "apcer@bpcer")] + [
        "d_eer[print]", "d_eer[replay]", "d_eer_average", "d_eer_worst"]
    assert names[: len(original)] == original
    added = names[len(original):]
    assert len(added) == 6 + 2 * 18 and all("_bob" in n or "[" in n for n in added)


def test_mad_morphs_without_attack_type_do_not_replace_the_pooled_points():
    unnamed = evaluate_own_head("ref", "mad", _scores(BONA, {"": PRINT + REPLAY})).metrics
    assert unnamed["bpcer@apcer10"] == evaluate_own_head("ref", "mad", REFERENCE).metrics["bpcer@apcer10"]
    assert unnamed["bpcer@apcer10[]"] == unnamed["bpcer@apcer10"]


def test_pad_iso_metrics_name_their_threshold_rule():
    test_only = {row["metric"]: row["details"] for row in evaluate_own_head("ref", "pad", REFERENCE).rows()}
    assert test_only["acer"] == {"rule": "test-eer-argmin"} and test_only["apcer[print]"]["rule"] == "test-eer-argmin"
    with_dev = {row["metric"]: row["details"]
                for row in evaluate_own_head("ref", "pad", REFERENCE, REFERENCE).rows()}
    assert with_dev["apcer_ap"] == {"rule": "dev-eer"} and with_dev["bpcer"] == {"rule": "dev-eer"}


def test_a_method_with_one_morph_gets_no_bob_points_but_the_others_do(caplog):
    m = evaluate_own_head("ref", "mad", _scores(BONA, {"print": PRINT, "single": [0.5]})).metrics
    assert "bpcer@apcer10_nearest[single]" in m and "d_eer[single]" in m
    assert not any(name.endswith("_bob[single]") for name in m)
    assert "bpcer@apcer10_bob[print]" in m and "bpcer@apcer10_bob" in m
    assert "bob's operating points left out" in caplog.text
