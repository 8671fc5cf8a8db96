import math

import numpy as np
import pytest
import torch

from overspec.finetune.heads import BinaryLinearHead, MarginHead


def _head(kind, scale=2.0, margin=0.5):
    head = MarginHead(2, 2, kind=kind, scale=scale, margin=margin)
    with torch.no_grad():  # class centres (1, 0) and (0, 1), given as columns of the kernel
        head.kernel.copy_(torch.tensor([[3.0, 0.0], [0.0, 5.0]]))
    return head


def test_cosface_logits_match_a_hand_computed_case():
    # x = (3, 4)/5 -> cos with class 0 = 0.6, class 1 = 0.8; label 0: s * (0.6 - m), s * 0.8
    logits = _head("cosface").logits(torch.tensor([[3.0, 4.0]]), torch.tensor([0]))
    np.testing.assert_allclose(logits.detach().numpy(), [[2.0 * (0.6 - 0.5), 2.0 * 0.8]], atol=1e-6)


def test_arcface_logits_match_a_hand_computed_case():
    logits = _head("arcface").logits(torch.tensor([[3.0, 4.0]]), torch.tensor([1]))
    expected = [[2.0 * 0.6, 2.0 * math.cos(math.acos(0.8) + 0.5)]]
    np.testing.assert_allclose(logits.detach().numpy(), expected, atol=1e-6)


def test_margin_loss_is_cross_entropy_of_margin_logits_and_margin_makes_it_harder():
    x, y = torch.tensor([[3.0, 4.0], [1.0, -2.0]]), torch.tensor([1, 0])
    for kind in ("cosface", "arcface"):
        head = _head(kind)
        logits = head.logits(x, y).detach().numpy().astype(np.float64)
        log_probs = logits - np.log(np.exp(logits).sum(1, keepdims=True))
        assert head.loss(x, y).item() == pytest.approx(-log_probs[[0, 1], [1, 0]].mean(), rel=1e-5)
        assert head.loss(x, y).item() > _head(kind, margin=0.0).loss(x, y).item()


def test_margin_head_rejects_bad_settings():
    with pytest.raises(ValueError, match="cosface"):
        MarginHead(4, 3, kind="sphereface")
    with pytest.raises(ValueError, match="2 identities"):
        MarginHead(4, 1)


def test_binary_head_bce_on_one_hot_two_logits_and_scores():
    head = BinaryLinearHead(2)
    with torch.no_grad():
        head.linear.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 2.0]]))
        head.linear.bias.copy_(torch.tensor([0.0, -1.0]))
    x, y = torch.tensor([[0.0, 5.0], [4.0, 0.0]]), torch.tensor([1, 0])
    logits = np.array([[0.0, 1.0], [1.0, -1.0]])  # normalised inputs (0, 1) and (1, 0)
    targets = np.array([[0.0, 1.0], [1.0, 0.0]])
    bce = -(targets * np.log(1 / (1 + np.exp(-logits))) + (1 - targets) * np.log(1 - 1 / (1 + np.exp(-logits))))
    assert head.loss(x, y).item() == pytest.approx(bce.mean(), rel=1e-6)
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    np.testing.assert_allclose(head.scores(x).detach().numpy(), p[:, 1], rtol=1e-6)
    np.testing.assert_allclose(head.to_binary_head().scores(x.numpy()), p[:, 1], rtol=1e-6)
    ce = BinaryLinearHead(2, loss="ce")
    ce.load_state_dict(head.state_dict())
    assert ce.loss(x, y).item() == pytest.approx(-np.log(p[[0, 1], [1, 0]]).mean(), rel=1e-6)
