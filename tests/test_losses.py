"""Losses (SPEC §5): per-image mean over all H·W pixels, easiness weights, no input mutation."""

from __future__ import annotations

import math

import pytest
import torch

from imas.losses import supervised_loss, unsupervised_loss


def test_unsupervised_mean_over_all_pixels() -> None:
    # 1 image, 2 classes, 2 pixels; logits give p(class 0) = 0.5 at both pixels.
    logits = torch.zeros(1, 2, 1, 2)
    labels = torch.zeros(1, 1, 2, dtype=torch.long)
    conf = torch.tensor([[[0.9, 0.1]]])
    loss = unsupervised_loss(logits, labels, conf, threshold=0.5)
    # Only one of two pixels is kept, but the mean divides by both: ln2 / 2.
    assert loss.item() == pytest.approx(math.log(2) / 2)


def test_unsupervised_weights_and_batch_mean() -> None:
    logits = torch.zeros(2, 2, 1, 1)
    labels = torch.zeros(2, 1, 1, dtype=torch.long)
    conf = torch.ones(2, 1, 1)
    weights = torch.tensor([1.0, 0.0])
    loss = unsupervised_loss(logits, labels, conf, 0.5, weights)
    assert loss.item() == pytest.approx(math.log(2) / 2)
    assert unsupervised_loss(logits, labels, conf, 0.5).item() == pytest.approx(math.log(2))


def test_threshold_is_inclusive_and_weights_carry_no_gradient() -> None:
    logits = torch.zeros(1, 2, 1, 1, requires_grad=True)
    conf = torch.full((1, 1, 1), 0.7)
    weights = torch.tensor([0.5], requires_grad=True)
    loss = unsupervised_loss(logits, torch.zeros(1, 1, 1, dtype=torch.long), conf, 0.7, weights)
    assert loss.item() == pytest.approx(0.5 * math.log(2))
    loss.backward()
    assert weights.grad is None and logits.grad is not None


def test_inputs_not_modified() -> None:
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 4, 4, generator=gen)
    labels = torch.randint(0, 3, (2, 4, 4), generator=gen)
    conf = torch.rand(2, 4, 4, generator=gen)
    w = torch.rand(2, generator=gen)
    copies = [t.clone() for t in (logits, labels, conf, w)]
    unsupervised_loss(logits, labels, conf, 0.5, w)
    for a, b in zip((logits, labels, conf, w), copies, strict=True):
        assert torch.equal(a, b)


def test_supervised_ignores_255() -> None:
    logits = torch.zeros(1, 2, 1, 2)
    logits[0, 1, 0, 1] = 100.0  # a confident wrong prediction on an ignored pixel
    target = torch.tensor([[[0, 255]]])
    assert supervised_loss(logits, target).item() == pytest.approx(math.log(2))


def test_unsupervised_matches_per_image_reference() -> None:
    gen = torch.Generator().manual_seed(7)
    for b, c, h, w in [(1, 2, 1, 1), (3, 4, 5, 2), (2, 21, 3, 3)]:
        logits = torch.randn(b, c, h, w, generator=gen, dtype=torch.float64)
        labels = torch.randint(0, c, (b, h, w), generator=gen)
        conf = torch.rand(b, h, w, generator=gen, dtype=torch.float64)
        conf[0, 0, 0] = 0.6  # a tie at exactly τ is kept
        weights = torch.rand(b, generator=gen, dtype=torch.float64)
        total = 0.0
        for i in range(b):
            image = 0.0
            for y in range(h):
                for x in range(w):
                    if conf[i, y, x] >= 0.6:
                        log_p = torch.log_softmax(logits[i, :, y, x], dim=0)
                        image += -float(log_p[labels[i, y, x]])
            total += float(weights[i]) * image / (h * w)
        got = unsupervised_loss(logits, labels, conf, 0.6, weights)
        assert got.item() == pytest.approx(total / b, rel=1e-9)
