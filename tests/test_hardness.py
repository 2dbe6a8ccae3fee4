"""Hardness γ (SPEC §2): hand-computed maps and a slow per-image reference."""

from __future__ import annotations

import math

import pytest
import torch

from imas.hardness import easiness, hardness, hardness_from_maps


def reference_wiou(ref: list[int], other: list[int], num_classes: int, ignore0: bool) -> float:
    """Obviously-correct wIoU(ref, other) straight from the SPEC's definition."""
    total = sum(1 for r in ref if not (ignore0 and r == 0))
    if total == 0:
        return 0.0
    value = 0.0
    for c in range(num_classes):
        if ignore0 and c == 0:
            continue
        n_ref = sum(1 for r in ref if r == c)
        if n_ref == 0:
            continue  # weight 0: absent-from-ref classes contribute nothing
        inter = sum(1 for r, o in zip(ref, other, strict=True) if r == c and o == c)
        union = sum(1 for r, o in zip(ref, other, strict=True) if r == c or o == c)
        value += (n_ref / total) * (inter / union)
    return value


def reference_hardness(s_map, t_map, s_ratio, t_ratio, num_classes, ignore0) -> list[float]:
    out = []
    for b in range(s_map.shape[0]):
        s = s_map[b].flatten().tolist()
        t = t_map[b].flatten().tolist()
        w_t = reference_wiou(t, s, num_classes, ignore0)
        w_s = reference_wiou(s, t, num_classes, ignore0)
        out.append(1 - 0.5 * (float(t_ratio[b]) * w_t + float(s_ratio[b]) * w_s))
    return out


def test_hand_computed_two_by_two() -> None:
    # teacher [[1,1],[2,0]], student [[1,2],[2,0]]
    t = torch.tensor([[[1, 1], [2, 0]]])
    s = torch.tensor([[[1, 2], [2, 0]]])
    # class 1: inter 1, union 2 → 0.5; class 2: inter 1, union 2 → 0.5
    # teacher weights (ignore 0): c1 2/3, c2 1/3 → 0.5; student weights: c1 1/3, c2 2/3 → 0.5
    gamma = hardness_from_maps(s, t, torch.tensor([1.0]), torch.tensor([0.5]), 3, True)
    assert gamma.item() == pytest.approx(1 - 0.5 * (0.5 * 0.5 + 1.0 * 0.5))
    # Without ignoring class 0, class 0 (IoU 1) joins with weight 1/4 in both directions.
    gamma = hardness_from_maps(s, t, torch.tensor([1.0]), torch.tensor([0.5]), 3, False)
    w_t = 2 / 4 * 0.5 + 1 / 4 * 0.5 + 1 / 4 * 1.0
    w_s = 1 / 4 * 0.5 + 2 / 4 * 0.5 + 1 / 4 * 1.0
    assert gamma.item() == pytest.approx(1 - 0.5 * (0.5 * w_t + 1.0 * w_s))


def test_identical_confident_maps_are_easiest() -> None:
    m = torch.tensor([[[1, 2], [3, 3]]])
    one = torch.ones(1)
    assert hardness_from_maps(m, m, one, one, 4).item() == 0.0


def test_all_background_reference_has_zero_wiou() -> None:
    zeros = torch.zeros(1, 3, 3, dtype=torch.long)
    other = torch.ones(1, 3, 3, dtype=torch.long)
    one = torch.ones(1)
    # wIoU(zeros, ·) = 0 by definition, wIoU(other, zeros) = IoU of class 1 = 0 → γ = 1.
    assert hardness_from_maps(zeros, other, one, one, 2).item() == 1.0
    # Both all class 0 with ignore_index0: every weight is 0/0 → γ = 1.
    assert hardness_from_maps(zeros, zeros, one, one, 2).item() == 1.0
    # Without the ignore rule the same maps agree perfectly.
    assert hardness_from_maps(zeros, zeros, one, one, 2, ignore_index0=False).item() == 0.0


def test_ratio_threshold_is_inclusive() -> None:
    probs = torch.tensor([0.8, 0.2]).view(1, 2, 1, 1).expand(1, 2, 2, 2).clone()
    probs[0, :, 0, 0] = torch.tensor([0.2, 0.8])
    # Every pixel's max prob is exactly 0.8 = τ → ratio 1 for both models.
    g = hardness(probs, probs, threshold=0.8, ignore_index0=False)
    assert g.item() == 0.0
    g = hardness(probs, probs, threshold=0.81, ignore_index0=False)
    assert g.item() == 1.0  # ratios 0 → γ = 1 whatever the agreement


@pytest.mark.parametrize("num_classes", [2, 3, 7, 21])
@pytest.mark.parametrize("ignore0", [True, False])
def test_vectorised_equals_per_image_reference(num_classes: int, ignore0: bool) -> None:
    gen = torch.Generator().manual_seed(num_classes * 2 + ignore0)
    for shape in [(1, 1, 1), (4, 5, 3), (3, 8, 8)]:
        s = torch.randint(0, num_classes, shape, generator=gen)
        t = torch.randint(0, num_classes, shape, generator=gen)
        t[0] = s[0]  # one image with full agreement
        if shape[0] > 2:
            t[1] = 0  # an all-background teacher map
        rs = torch.rand(shape[0], generator=gen)
        rt = torch.rand(shape[0], generator=gen)
        got = hardness_from_maps(s, t, rs, rt, num_classes, ignore0)
        want = reference_hardness(s, t, rs, rt, num_classes, ignore0)
        assert got.shape == (shape[0],)
        for g, w in zip(got.tolist(), want, strict=True):
            assert math.isclose(g, w, abs_tol=1e-6)


def test_range_and_easiness_from_probabilities() -> None:
    gen = torch.Generator().manual_seed(0)
    p_s = torch.rand(5, 4, 6, 6, generator=gen).softmax(1)
    p_t = torch.rand(5, 4, 6, 6, generator=gen).softmax(1)
    g = hardness(p_s, p_t, 0.3)
    assert ((g >= 0) & (g <= 1)).all()
    assert torch.allclose(easiness(p_s, p_t, 0.3), 1 - g)


def test_shape_mismatch_is_an_error() -> None:
    with pytest.raises(ValueError, match="differ in shape"):
        hardness(torch.rand(1, 2, 3, 3), torch.rand(1, 2, 3, 4), 0.5)
