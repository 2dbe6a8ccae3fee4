"""Easiness mixing and hardness-adaptive CutMix (SPEC §3–4)."""

from __future__ import annotations

import torch

from imas.augment import (
    cutmix,
    cutmix_boxes,
    cutmix_partner,
    mix_views,
    random_partner,
    sample_views,
)


def test_mix_views_per_image() -> None:
    strong = torch.full((3, 1, 2, 2), 10.0)
    weak = torch.zeros(3, 1, 2, 2)
    mixed = mix_views(strong, weak, torch.tensor([1.0, 0.0, 0.25]))
    assert mixed[0].eq(10).all() and mixed[1].eq(0).all() and mixed[2].eq(2.5).all()


def test_partner_pairs_easiest_with_hardest() -> None:
    e = torch.tensor([0.5, 0.9, 0.1, 0.7])
    # ascending: idx2 (0.1), idx0 (0.5), idx3 (0.7), idx1 (0.9)
    assert cutmix_partner(e).tolist() == [3, 2, 1, 0]


def test_partner_odd_batch_median_pairs_with_itself() -> None:
    e = torch.tensor([0.3, 0.1, 0.2])
    assert cutmix_partner(e).tolist() == [1, 0, 2]


def test_partner_is_an_involution_with_ties() -> None:
    e = torch.tensor([0.5, 0.5, 0.5, 0.5, 0.1, 0.9])
    p = cutmix_partner(e)
    assert p[p].tolist() == list(range(6))
    assert cutmix_partner(e).tolist() == p.tolist()  # deterministic


def test_boxes_size_centre_range_and_determinism() -> None:
    gen = torch.Generator().manual_seed(3)
    boxes = cutmix_boxes(64, 32, 48, gen)
    assert boxes.shape == (64, 32, 48) and boxes.dtype == torch.bool
    areas = boxes.flatten(1).sum(1)
    assert (areas > 0).all()
    # one side ratio for the whole batch: every unclipped box has the same area
    assert areas.max() <= int(32 * 0.9) * int(48 * 0.9)
    again = cutmix_boxes(64, 32, 48, torch.Generator().manual_seed(3))
    assert torch.equal(boxes, again)
    # centres are drawn in [H/16, H): no box lies wholly in the top two rows
    rows_hit = boxes.any(dim=2)
    first_row = rows_hit.float().argmax(dim=1)
    assert (first_row <= 31).all()


def test_cutmix_pastes_partner_pixels_labels_and_confidence() -> None:
    images = torch.arange(2).float().view(2, 1, 1, 1).expand(2, 3, 4, 4).clone()
    labels = torch.tensor([1, 2]).view(2, 1, 1).expand(2, 4, 4).clone()
    conf = torch.tensor([0.3, 0.9]).view(2, 1, 1).expand(2, 4, 4).clone()
    boxes = torch.zeros(2, 4, 4, dtype=torch.bool)
    boxes[0, :2, :2] = True
    view = cutmix(images, labels, conf, torch.tensor([1, 0]), boxes)
    assert view.images[0, :, :2, :2].eq(1).all() and view.images[0, :, 2:, :].eq(0).all()
    assert view.labels[0, :2, :2].eq(2).all() and view.labels[0, 2:].eq(1).all()
    assert view.confidence[0, :2, :2].eq(0.9).all()
    assert torch.equal(view.images[1], images[1])  # empty box: unchanged
    assert images[0].eq(0).all()  # inputs untouched


def test_random_partner_is_a_permutation() -> None:
    p = random_partner(10, torch.Generator().manual_seed(0))
    assert sorted(p.tolist()) == list(range(10))


def test_partner_matches_rank_reference() -> None:
    gen = torch.Generator().manual_seed(11)
    for b in range(1, 12):
        e = torch.rand(b, generator=gen)
        ranked = sorted(range(b), key=lambda i: float(e[i]))  # distinct values: no ties
        want = [0] * b
        for r, i in enumerate(ranked):
            want[i] = ranked[b - 1 - r]
        assert cutmix_partner(e).tolist() == want


def test_partner_dtype_and_ties_match_stable_rank_reference() -> None:
    # Easiness is often tied (e.g. all-background images share γ = 1): ties keep batch order.
    gen = torch.Generator().manual_seed(12)
    for b in range(1, 10):
        e = torch.randint(0, 3, (b,), generator=gen).float() / 2  # values in {0, 0.5, 1}
        ranked = sorted(range(b), key=lambda i: float(e[i]))  # Python's sort is stable
        want = [0] * b
        for r, i in enumerate(ranked):
            want[i] = ranked[b - 1 - r]
        before = e.clone()
        got = cutmix_partner(e)
        assert got.dtype == torch.int64 and got.shape == (b,)
        assert got.tolist() == want
        assert torch.equal(e, before)


def test_sample_views_takes_the_strong_view_with_probability_easiness() -> None:
    strong = torch.ones(4, 3, 2, 2)
    weak = torch.zeros(4, 3, 2, 2)
    gen = torch.Generator().manual_seed(0)
    # e = 1 always strong, e = 0 always weak: whole images, never a blend.
    out = sample_views(strong, weak, torch.tensor([1.0, 0.0, 1.0, 0.0]), gen)
    assert out.flatten(1).mean(dim=1).tolist() == [1.0, 0.0, 1.0, 0.0]
    # One U(0,1) draw per image from the generator: the same draws decide the same images.
    e = torch.full((4,), 0.5)
    draws = torch.rand(4, generator=torch.Generator().manual_seed(7))
    out = sample_views(strong, weak, e, torch.Generator().manual_seed(7))
    assert out.flatten(1).mean(dim=1).tolist() == (draws < 0.5).float().tolist()
    many = sample_views(
        torch.ones(4000, 1, 1, 1), torch.zeros(4000, 1, 1, 1), torch.full((4000,), 0.3), gen
    )
    assert abs(many.mean().item() - 0.3) < 0.03
