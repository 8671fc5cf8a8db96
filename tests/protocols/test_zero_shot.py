"""Zero-shot protocol on a fake text tower whose answers are known by construction."""

import hashlib
import json

import numpy as np
import pytest
import torch

from overspec.features.text import build_classifier, prompt_set_fingerprint
from overspec.protocols.zero_shot import evaluate_zero_shot, zero_shot_logits

CLASSNAMES = ["cat", "dog", "bird", "fish", "horse", "cow"]
DIM = 9  # one axis per class, three spare axes for template-specific offsets


class FakeTextTower:
    """Embeds a prompt as ``gain[class, template] * (e_class + offset[template])``; records every batch."""

    def __init__(self, templates: list[str], gains: np.ndarray, offsets: list[np.ndarray]) -> None:
        self.templates, self.gains, self.offsets = templates, gains, offsets
        self.batches: list[list[str]] = []

    def embedding(self, prompt: str) -> np.ndarray:
        for t, template in enumerate(self.templates):
            for c, name in enumerate(CLASSNAMES):
                if template.replace("{c}", name) == prompt:
                    vec = np.zeros(DIM)
                    vec[c] = 1.0
                    return self.gains[c, t] * (vec + self.offsets[t])
        raise AssertionError(f"unexpected prompt {prompt!r}")

    def __call__(self, prompts: list[str]) -> torch.Tensor:
        self.batches.append(list(prompts))
        return torch.tensor(np.stack([self.embedding(p) for p in prompts]), dtype=torch.float32)


def offset(axis: int, size: float) -> np.ndarray:
    vec = np.zeros(DIM)
    vec[axis] = size
    return vec


def tower_with_unequal_norms() -> FakeTextTower:
    """Two templates, the second tilted towards a spare axis; "cat" under the second has a 50x larger norm."""
    gains = np.ones((len(CLASSNAMES), 2))
    gains[0, 1] = 50.0
    return FakeTextTower(["a photo of a {c}.", "{c} art"], gains, [offset(6, 0.0), offset(6, 1.0)])


def expected_classifier(tower: FakeTextTower, normalise_each: bool) -> np.ndarray:
    """Hand computation of the (D, C) classifier, averaging normalised or raw template embeddings."""
    columns = []
    for name in CLASSNAMES:
        embs = [tower.embedding(t.replace("{c}", name)) for t in tower.templates]
        if normalise_each:
            embs = [e / np.linalg.norm(e) for e in embs]
        mean = np.mean(embs, axis=0)
        columns.append(mean / np.linalg.norm(mean))
    return np.stack(columns, axis=1)


def test_classifier_averages_normalised_template_embeddings() -> None:
    tower = tower_with_unequal_norms()
    clf = build_classifier(tower, CLASSNAMES, tower.templates)
    assert clf.shape == (DIM, len(CLASSNAMES))
    np.testing.assert_allclose(clf.numpy(), expected_classifier(tower, normalise_each=True), atol=1e-6)
    # Averaging raw embeddings would let the large template dominate: the two constructions differ clearly.
    raw = expected_classifier(tower, normalise_each=False)
    assert np.abs(clf.numpy() - raw).max() > 0.1
    np.testing.assert_allclose(np.linalg.norm(clf.numpy(), axis=0), 1.0, atol=1e-6)


def test_normalisation_changes_a_prediction() -> None:
    tower = tower_with_unequal_norms()
    clf = build_classifier(tower, CLASSNAMES, tower.templates)
    raw = torch.tensor(expected_classifier(tower, normalise_each=False), dtype=torch.float32)
    # Hand-worked: CLIP recipe columns are 0.924 e_c + 0.383 e_6 for every class; the raw mean tilts "cat" to
    # 0.714 e_cat + 0.700 e_6. An image 0.6 e_cat + 0.55 e_dog scores cat 0.554 > dog 0.508 with the recipe,
    # but cat 0.428 < dog 0.508 with raw averaging.
    image = torch.zeros(1, DIM)
    image[0, 0], image[0, 1] = 0.6, 0.55
    logits = zero_shot_logits(image, clf)[0] / 100 * image.norm()
    assert logits[:2].tolist() == pytest.approx([0.924 * 0.6, 0.924 * 0.55], abs=1e-3)
    assert int(zero_shot_logits(image, clf).argmax()) == 0
    assert int(zero_shot_logits(image, raw).argmax()) == 1


def test_all_prompts_encoded_in_batches_spanning_classes() -> None:
    templates = [f"template {i} of {{c}}" for i in range(5)]
    gains = np.arange(1.0, 31.0).reshape(len(CLASSNAMES), 5)
    tower = FakeTextTower(templates, gains, [offset(6 + i % 3, 0.1 * i) for i in range(5)])
    clf_big = build_classifier(tower, CLASSNAMES, templates, batch_size=256)
    assert [len(b) for b in tower.batches] == [30]
    tower.batches.clear()
    clf_small = build_classifier(tower, CLASSNAMES, templates, batch_size=7)
    assert [len(b) for b in tower.batches] == [7, 7, 7, 7, 2]
    expected = sorted(t.replace("{c}", n) for n in CLASSNAMES for t in templates)
    assert sorted(p for b in tower.batches for p in b) == expected
    torch.testing.assert_close(clf_big, clf_small)


def images_near(classes: list[int], rng: np.random.Generator, gain: float = 5.0) -> np.ndarray:
    """Image features ``gain * e_class + noise`` (unnormalised: the protocol normalises them)."""
    x = rng.normal(scale=0.1, size=(len(classes), DIM))
    x[np.arange(len(classes)), classes] += 1.0
    return gain * x


def test_predicts_the_class_each_image_was_placed_near() -> None:
    tower = tower_with_unequal_norms()
    clf = build_classifier(tower, CLASSNAMES, tower.templates)
    rng = np.random.default_rng(0)
    placed = [0, 1, 2, 3, 4, 5, 5, 4, 3, 2, 1, 0]
    labels = np.array([0, 1, 2, 3, 4, 5, 5, 4, 3, 2, 0, 1])  # the last two images sit near the wrong class
    result = evaluate_zero_shot(images_near(placed, rng), labels, clf)
    np.testing.assert_array_equal(result["predictions"]["pred"], placed)
    assert result["acc1"] == pytest.approx(10 / 12)
    # classes 0 and 1: 1 of 2 right each; the other four classes: all right
    assert result["mean_per_class_recall"] == pytest.approx((0.5 + 0.5 + 4) / 6)
    assert result["acc5"] == pytest.approx(1.0)
    assert result["n_classes"] == 6 and result["n_samples"] == 12


def test_top5_on_a_constructed_ranking() -> None:
    clf = torch.eye(DIM)[:, :6]
    image = torch.tensor([[6.0, 5.0, 4.0, 3.0, 2.0, 1.0, 0.0, 0.0, 0.0]])
    for label, in_top5 in [(4, True), (5, False)]:
        result = evaluate_zero_shot(image, np.array([label]), clf)
        assert result["acc1"] == 0.0
        assert result["acc5"] == float(in_top5)


def test_logits_normalise_images_and_use_the_scale() -> None:
    clf = torch.nn.functional.normalize(torch.randn(DIM, 6, generator=torch.Generator().manual_seed(0)), dim=0)
    x = torch.randn(4, DIM, generator=torch.Generator().manual_seed(1))
    base = zero_shot_logits(x, clf)
    torch.testing.assert_close(zero_shot_logits(7.0 * x, clf), base)
    torch.testing.assert_close(zero_shot_logits(x.numpy(), clf, scale=1.0), base / 100.0)
    assert float(base.abs().max()) <= 100.0 + 1e-4


def test_prompt_set_fingerprint_is_sha256_of_the_ordered_lists() -> None:
    templates = ["a photo of a {c}.", "a {c}."]
    fp = prompt_set_fingerprint(CLASSNAMES, templates)
    payload = json.dumps({"classnames": CLASSNAMES, "templates": templates}, ensure_ascii=False)
    assert fp == hashlib.sha256(payload.encode()).hexdigest()
    assert fp == prompt_set_fingerprint(tuple(CLASSNAMES), tuple(templates))
    assert fp != prompt_set_fingerprint(CLASSNAMES, templates[::-1])
    assert fp != prompt_set_fingerprint(CLASSNAMES[::-1], templates)
    assert fp != prompt_set_fingerprint(CLASSNAMES, ["a photo of a {c}!", "a {c}."])


def test_errors_name_the_problem() -> None:
    tower = tower_with_unequal_norms()
    with pytest.raises(ValueError, match="no \\{c\\} placeholder"):
        build_classifier(tower, CLASSNAMES, ["a photo of a {}."])
    with pytest.raises(ValueError, match="at least one class name"):
        build_classifier(tower, [], ["{c}"])
    with pytest.raises(ValueError, match="do not match a classifier"):
        zero_shot_logits(torch.zeros(2, 5), torch.zeros(DIM, 6))
