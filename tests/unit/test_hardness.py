"""Hardness γ (SPEC §2): hand-computed maps and a slow per-image reference."""

from __future__ import annotations

import math

import pytest
import torch

import imas.hardness as hardness_module
from imas.hardness import batch_confusion, easiness, hardness, hardness_from_maps


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


def _probs_from(labels: list[int], confs: list[float], num_classes: int) -> torch.Tensor:
    """Probabilities [1, C, 1, N]: max `conf` at `label`, the rest shared equally (all < conf)."""
    p = torch.empty(1, num_classes, 1, len(labels))
    for j, (label, conf) in enumerate(zip(labels, confs, strict=True)):
        p[0, :, 0, j] = (1 - conf) / (num_classes - 1)
        p[0, label, 0, j] = conf
    return p


def test_hand_computed_from_probabilities_pairs_each_ratio_with_its_own_map() -> None:
    # teacher [1,1,1,2], student [1,1,2,2]: IoU_1 = 2/3, IoU_2 = 1/2.
    # wIoU(t, s) = 3/4·2/3 + 1/4·1/2 = 5/8; wIoU(s, t) = 2/4·2/3 + 2/4·1/2 = 7/12.
    # ρ_t = 1 (every max exactly τ = 0.75, a tie that must count); ρ_s = 1/2.
    # γ = 1 − ½(1·5/8 + ½·7/12) = 13/24; pairing the ratios the other way round gives 53/96.
    for num_classes in (3, 8):  # classes 3..7 are absent from both maps and must drop out
        teacher = _probs_from([1, 1, 1, 2], [0.75] * 4, num_classes)
        student = _probs_from([1, 1, 2, 2], [0.75, 0.9, 0.5, 0.6], num_classes)
        g = hardness(student, teacher, threshold=0.75)
        assert g.item() == pytest.approx(13 / 24, abs=1e-7)
        assert easiness(student, teacher, 0.75).item() == pytest.approx(11 / 24, abs=1e-7)


def reference_from_probs(
    p_s: torch.Tensor, p_t: torch.Tensor, tau: float, ignore0: bool
) -> list[float]:
    """γ per image straight from SPEC §2: pixel-by-pixel argmax and `max ≥ τ` in Python."""
    out = []
    for i in range(p_s.shape[0]):
        maps, ratios = [], []
        for p in (p_s[i], p_t[i]):
            pixels = p.flatten(1).t().tolist()  # [HW][C]
            maps.append([row.index(max(row)) for row in pixels])  # first max, like torch
            ratios.append(sum(max(row) >= tau for row in pixels) / len(pixels))
        s, t = maps
        c = p_s.shape[1]
        w_t, w_s = reference_wiou(t, s, c, ignore0), reference_wiou(s, t, c, ignore0)
        out.append(1 - 0.5 * (ratios[1] * w_t + ratios[0] * w_s))
    return out


def _image(labels: torch.Tensor, conf: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Probabilities [C, H, W] with max `conf` (exactly, in float32) at `labels`."""
    p = ((1 - conf) / (num_classes - 1)).expand(num_classes, *labels.shape).clone()
    return p.scatter(0, labels[None], conf[None])


def _batch_with_edge_cases(
    num_classes: int, h: int, w: int, tau: float, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Student and teacher probabilities [6, C, h, w], one edge case per image."""
    c, lo = num_classes, 1 / num_classes + 0.01  # conf > 1/C keeps the argmax unique

    def labels(high: int = c) -> torch.Tensor:
        return torch.randint(0, high, (h, w), generator=gen)

    def confs(below_tau: bool = False) -> torch.Tensor:
        top = tau if below_tau else 1.0
        conf = lo + (top - lo) * torch.rand(h, w, generator=gen) * 0.999
        if not below_tau:  # a quarter of the pixels sit exactly on τ
            conf[torch.rand(h, w, generator=gen) < 0.25] = tau
        return conf

    zeros = torch.zeros(h, w, dtype=torch.long)
    random_s = torch.rand(c, h, w, generator=gen).mul(4).softmax(0)
    same = _image(labels(), confs(), c)
    pairs = [
        (random_s, torch.rand(c, h, w, generator=gen).mul(4).softmax(0)),  # plain softmax
        (same, same),  # identical maps
        (_image(labels(), confs(), c), _image(zeros, confs(), c)),  # teacher all class 0
        (_image(zeros + c - 1, confs(), c), _image(zeros + c - 1, confs(), c)),  # one class
        (_image(labels(2), confs(True), c), _image(labels(2), confs(), c)),  # ρ_s = 0
        (_image(zeros, confs(), c), _image(zeros, confs(), c)),  # both all class 0
    ]
    return torch.stack([s for s, _ in pairs]), torch.stack([t for _, t in pairs])


@pytest.mark.parametrize("num_classes", [2, 3, 5, 11, 21])
def test_hardness_from_probabilities_matches_per_image_reference(num_classes: int) -> None:
    gen = torch.Generator().manual_seed(100 + num_classes)
    # τ = 0.5 and 0.75 are exact in float32, so "max == τ" is a real tie; with C = 2 a max of
    # 0.5 would tie the argmax as well, so that case uses 0.75 only.
    taus = [0.75] if num_classes == 2 else [0.5, 0.75]
    for tau in taus:
        for h, w in [(1, 1), (1, 7), (5, 2), (6, 6)]:
            p_s, p_t = _batch_with_edge_cases(num_classes, h, w, tau, gen)
            for ignore0 in (True, False):
                got = hardness(p_s, p_t, tau, ignore0)
                want = reference_from_probs(p_s, p_t, tau, ignore0)
                assert got.shape == (6,) and got.dtype == torch.float32
                for g, wv in zip(got.tolist(), want, strict=True):
                    assert math.isclose(g, wv, abs_tol=1e-6), (tau, h, w, ignore0)
                assert torch.equal(easiness(p_s, p_t, tau, ignore0), 1 - got)
    # The edge cases really are edge cases (else the reference comparison proves little).
    p_s, p_t = _batch_with_edge_cases(num_classes, 4, 4, 0.75, gen)
    g = hardness(p_s, p_t, 0.75).tolist()
    rho_s, rho_t = ((p.amax(1) >= 0.75).flatten(1).float().mean(1).tolist() for p in (p_s, p_t))
    assert 0 < rho_s[1] < 1 and g[1] == pytest.approx(1 - rho_s[1])  # wIoU = 1 both ways
    assert g[3] == pytest.approx(1 - 0.5 * (rho_s[3] + rho_t[3]))  # one shared class
    assert rho_s[4] == 0.0 and rho_t[4] > 0  # nothing confident: the student term vanishes
    assert g[5] == 1.0  # all class 0 on both sides: wIoU = 0 under ignore_index0


def test_hardness_has_no_loop_over_images_or_classes() -> None:
    # SPEC §2 asks for one bincount over the batch; a loop over images or classes would pass
    # the value tests but not scale to a real batch. The one loop allowed walks fixed-size pixel
    # slices (`_SLICE`), whose count depends on the bytes, not on B or C.
    import ast
    import inspect

    import imas.hardness as module

    tree = ast.parse(inspect.getsource(module))
    loops = [n for n in ast.walk(tree) if isinstance(n, ast.For | ast.While | ast.comprehension)]
    assert [ast.unparse(n.iter) for n in loops] == ["range(0, flat.numel(), _SLICE)"]


def test_one_bincount_per_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = torch.bincount

    def counting(*args, **kwargs):
        calls.append(args[0].numel())
        return real(*args, **kwargs)

    monkeypatch.setattr(torch, "bincount", counting)
    monkeypatch.setattr(hardness_module, "_SLICE", 7)  # many slices, still one bincount
    g = torch.Generator().manual_seed(3)
    s, t = (torch.randint(0, 5, (4, 9, 11), generator=g) for _ in range(2))
    ratio = torch.rand(4, generator=g)
    got = hardness_from_maps(s, t, ratio, ratio, 5)
    assert calls == [4 * 9 * 11]
    expected = reference_hardness(s, t, ratio, ratio, 5, True)
    assert got.tolist() == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize(
    ("batch", "classes", "dtype"),
    [(16, 21, torch.int16), (16, 23, torch.int32), (4, 150, torch.int32)],
)
def test_bin_index_uses_the_narrowest_type(batch: int, classes: int, dtype: torch.dtype) -> None:
    lanes = hardness_module._LANES
    assert hardness_module._bin_dtype(lanes * batch * classes * classes) == dtype
    assert hardness_module._bin_dtype(1 << 15) == torch.int16  # bins 0 .. 32767
    assert hardness_module._bin_dtype((1 << 15) + 1) == torch.int32


@pytest.mark.parametrize(("batch", "classes"), [(16, 21), (16, 23)])
def test_batch_confusion_at_the_int16_limit(batch: int, classes: int) -> None:
    # 4 lanes × 16 images × 21² classes fill 28,224 of int16's 32,768 bins; 23 classes need
    # int32. Either way the last bin of the last image must not wrap.
    b, c = batch, classes
    rows = torch.full((b, 2, 5), c - 1)
    cols = torch.full((b, 2, 5), c - 1)
    cols[:, 0, 0] = 0
    cols[-1, 1, 4] = 3
    confusion = batch_confusion(rows, cols, c)
    assert confusion.dtype == torch.int64 and confusion.shape == (b, c, c)
    assert (confusion[:-1, c - 1, c - 1] == 9).all() and int(confusion[-1, c - 1, c - 1]) == 8
    assert (confusion[:, c - 1, 0] == 1).all() and int(confusion[-1, c - 1, 3]) == 1
    assert int(confusion.sum()) == b * 10
