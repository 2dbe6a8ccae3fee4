"""Losses (SPEC §5): per-image mean over all H·W pixels, easiness weights, no input mutation."""

from __future__ import annotations

import math

import pytest
import torch

from imas.losses import ohem_loss, supervised_loss, unsupervised_loss


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


def test_a_pseudo_label_of_255_is_masked_like_an_unconfident_pixel() -> None:
    # The authors mask conf ≥ τ and ŷ ≠ 255: a confident 255 (padding, the user's own masking)
    # adds nothing, yet still counts in the per-image mean over all H·W pixels.
    logits = torch.zeros(1, 2, 1, 3, requires_grad=True)
    labels = torch.tensor([[[0, 255, 1]]])
    conf = torch.tensor([[[0.9, 0.9, 0.1]]])
    before = labels.clone(), conf.clone()
    loss = unsupervised_loss(logits, labels, conf, threshold=0.5)
    assert loss.item() == pytest.approx(math.log(2) / 3)
    loss.backward()
    assert logits.grad is not None and logits.grad[0, :, 0, 1:].abs().sum() == 0
    assert torch.equal(labels, before[0]) and torch.equal(conf, before[1])


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


def test_no_confident_pixel_gives_zero_loss_and_zero_gradient() -> None:
    logits = torch.randn(2, 3, 2, 5, requires_grad=True)
    labels = torch.randint(0, 3, (2, 2, 5))
    conf = torch.full((2, 2, 5), 0.74)
    loss = unsupervised_loss(logits, labels, conf, 0.75, torch.tensor([0.3, 1.0]))
    assert loss.item() == 0.0  # an empty mask is 0, not 0/0 = NaN
    loss.backward()
    assert torch.equal(logits.grad, torch.zeros_like(logits))


def test_inputs_unchanged_bit_for_bit_after_forward_and_backward() -> None:
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(3, 4, 5, 2, generator=gen).requires_grad_()
    labels = torch.randint(0, 4, (3, 5, 2), generator=gen)
    conf = torch.rand(3, 5, 2, generator=gen)
    conf[0, 0, 0] = 0.5
    weights = torch.rand(3, generator=gen).requires_grad_()  # e.g. easiness still in a graph
    inputs = (logits, labels, conf, weights)
    copies = [t.detach().clone() for t in inputs]
    loss = unsupervised_loss(logits, labels, conf, 0.5, weights)
    loss.backward()
    for name, t, c in zip(("logits", "labels", "conf", "weights"), inputs, copies, strict=True):
        assert torch.equal(t.detach(), c), name
        assert t.dtype == c.dtype, name
    assert weights.grad is None and logits.grad is not None


def reference_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    conf: torch.Tensor,
    tau: float,
    weights: torch.Tensor | None,
) -> float:
    """SPEC §5 pixel by pixel in float64 Python: log-sum-exp CE, zero for unconfident pixels."""
    b, c, h, w = logits.shape
    z_all = logits.detach().tolist()
    total = 0.0
    for i in range(b):
        image = 0.0
        for y in range(h):
            for x in range(w):
                if float(conf[i, y, x]) >= tau:
                    z = [z_all[i][k][y][x] for k in range(c)]
                    top = max(z)
                    lse = top + math.log(sum(math.exp(v - top) for v in z))
                    image += lse - z[int(labels[i, y, x])]
        total += (1.0 if weights is None else float(weights[i])) * image / (h * w)
    return total / b


@pytest.mark.parametrize("num_classes", [2, 3, 7, 21])
def test_float32_loss_matches_reference_with_ties_and_empty_masks(num_classes: int) -> None:
    gen = torch.Generator().manual_seed(20 + num_classes)
    for tau in (0.5, 0.75):  # exact in float32: conf == τ is a true tie
        for b, h, w in [(1, 1, 1), (2, 1, 6), (3, 4, 2), (4, 5, 5)]:
            logits = (3 * torch.randn(b, num_classes, h, w, generator=gen)).requires_grad_()
            labels = torch.randint(0, num_classes, (b, h, w), generator=gen)
            conf = torch.rand(b, h, w, generator=gen)
            conf[torch.rand(b, h, w, generator=gen) < 0.3] = tau
            conf[-1] = tau - 0.01  # last image: no confident pixel
            if b > 1:
                labels[0] = num_classes - 1  # a one-class pseudo-label map
            weights = torch.rand(b, generator=gen)
            for wts in (weights, None):
                got = unsupervised_loss(logits, labels, conf, tau, wts)
                want = reference_loss(logits, labels, conf, tau, wts)
                assert got.item() == pytest.approx(want, rel=1e-5, abs=1e-7), (tau, b, h, w)
            # masked pixels contribute nothing, not even a gradient
            logits.grad = None
            unsupervised_loss(logits, labels, conf, tau, weights).backward()
            masked = (conf < tau)[:, None].expand_as(logits)
            assert torch.equal(logits.grad[masked], torch.zeros(int(masked.sum())))


def _ohem_pixels(batch_of_pixels: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Five pixels, two classes, logits (a, 0): p(class 0) = a / (a + 1) after exp.

    True-class probabilities 0.5, 0.25, 0.75, 0.9 and one ignored pixel; cross-entropies
    ln 2, ln 4, ln 4/3, ln 10/9. As one 1×5 image, or as five 1×1 images (OHEM ranks the batch).
    """
    a = torch.tensor([0.0, math.log(3), math.log(3), math.log(9), 5.0])
    logits = torch.stack([a, torch.zeros(5)])  # [2, 5]
    target = torch.tensor([0, 1, 0, 0, 255])
    if batch_of_pixels:
        return logits.T.reshape(5, 2, 1, 1).clone(), target.reshape(5, 1, 1)
    return logits.reshape(1, 2, 1, 5).clone(), target.reshape(1, 1, 5)


LN = {"0.5": math.log(2), "0.25": math.log(4), "0.75": math.log(4 / 3), "0.9": math.log(10 / 9)}


@pytest.mark.parametrize(
    ("thresh", "min_kept", "kept"),
    [
        (0.7, 1, ["0.5", "0.25"]),  # the pixels below thresh; min_kept already met
        (0.7, 3, ["0.5", "0.25", "0.75"]),  # 3rd smallest p = 0.75 > thresh raises the bar
        (0.7, 4, ["0.5", "0.25", "0.75", "0.9"]),
        (0.7, 5, ["0.5", "0.25", "0.75", "0.9"]),  # fewer labeled pixels than min_kept: all
        (0.4, 1, ["0.25"]),
        (0.5, 1, ["0.5", "0.25"]),  # p = 0.5 exactly: ≤ thresh is kept (U2PL's `le`)
    ],
)
@pytest.mark.parametrize("batch_of_pixels", [False, True])
def test_ohem_hand_computed(
    thresh: float, min_kept: int, kept: list[str], batch_of_pixels: bool
) -> None:
    logits, target = _ohem_pixels(batch_of_pixels)
    expected = sum(LN[k] for k in kept) / len(kept)
    loss = ohem_loss(logits, target, thresh=thresh, min_kept=min_kept)
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_ohem_gradient_only_on_kept_pixels_and_inputs_untouched() -> None:
    logits, target = _ohem_pixels()
    logits.requires_grad_(True)
    before = target.clone()
    ohem_loss(logits, target, thresh=0.7, min_kept=1).backward()
    touched = logits.grad.abs().sum(dim=1).flatten() > 0
    assert touched.tolist() == [True, True, False, False, False]
    assert torch.equal(target, before)


def test_ohem_with_every_pixel_kept_is_the_plain_loss() -> None:
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 4, 6, 6, generator=gen)
    target = torch.randint(0, 4, (2, 6, 6), generator=gen)
    target[0, :2] = 255
    plain = supervised_loss(logits, target)
    assert torch.equal(ohem_loss(logits, target, thresh=1.0, min_kept=1), plain)
    assert torch.equal(ohem_loss(logits, target, thresh=0.1, min_kept=10_000), plain)
    with pytest.raises(ValueError, match="min_kept"):
        ohem_loss(logits, target, thresh=0.7, min_kept=0)
