"""Paired intervals for the verdict (issue 17): Student-t over seeds on a hand-computed case,
mIoU from confusions as imas.evaluate scores it, and a paired scene bootstrap."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from imas.evaluate import iou
from pipeline.reporting.intervals import miou_from_confusion, paired_bootstrap, paired_t

T_975_DF2 = 4.302652729911275  # Student t, 97.5 % quantile, 2 degrees of freedom


def test_paired_t_hand_computed() -> None:
    got = paired_t([1.0, 2.0, 3.0])  # mean 2, sd 1, standard error 1/√3
    half = T_975_DF2 / math.sqrt(3)
    assert got.estimate == 2.0
    assert got.low == pytest.approx(2 - half) and got.high == pytest.approx(2 + half)
    assert got.as_json() == {"estimate": 2.0, "ci95": [got.low, got.high]}
    # One seed has no spread: no lower bound a rule could pass on.
    one = paired_t([4.0])
    assert (one.estimate, one.low, one.high) == (4.0, -math.inf, math.inf)
    for bad in ([], [1.0, math.nan]):
        with pytest.raises(ValueError, match="finite paired differences"):
            paired_t(bad)


def test_miou_from_confusion_matches_the_evaluator() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        c = rng.integers(0, 50, size=(5, 5))
        c[rng.integers(5)] = 0  # a class absent from the target ...
        c[:, rng.integers(5)] = 0  # ... and one never predicted
        _, want = iou(torch.from_numpy(c))
        assert miou_from_confusion(c) == pytest.approx(100 * want)
    stack = rng.integers(0, 9, size=(4, 3, 3))
    assert miou_from_confusion(stack).shape == (4,)


def per_image(n: int, correct: float, seed: int) -> np.ndarray:
    """[n, 3, 3] confusions of 100-pixel images; `correct` of each image's pixels right."""
    rng = np.random.default_rng(seed)
    out = np.zeros((n, 3, 3), dtype=np.int64)
    for i in range(n):
        cls = rng.integers(3)
        right = int(rng.binomial(100, correct))
        out[i, cls, cls] = right
        out[i, cls, (cls + 1) % 3] = 100 - right
    return out


def test_paired_bootstrap_resamples_scenes_once_for_both_methods() -> None:
    a = per_image(200, 0.8, seed=1)
    same = paired_bootstrap(a, a.copy())
    assert (same.estimate, same.low, same.high) == (0.0, 0.0, 0.0)  # shared scenes cancel
    b = per_image(200, 0.6, seed=2)
    got = paired_bootstrap(a, b, resamples=500, seed=3)
    assert got.low < got.estimate < got.high and got.low > 0  # a is clearly better
    assert got == paired_bootstrap(a, b, resamples=500, seed=3)  # seeded
    # The matrix-product resampling equals summing each resample's scenes one by one.
    rng = np.random.default_rng(3)
    counts = rng.multinomial(200, np.full(200, 1 / 200), size=500)
    loop = [
        miou_from_confusion((a * k[:, None, None]).sum(0))
        - miou_from_confusion((b * k[:, None, None]).sum(0))
        for k in counts
    ]
    low, high = np.quantile(loop, [0.025, 0.975])
    assert got.low == pytest.approx(low) and got.high == pytest.approx(high)
    # More scenes, a narrower interval (about 1/√N).
    wide = paired_bootstrap(a[:50], b[:50], resamples=500, seed=3)
    assert wide.high - wide.low > 1.5 * (got.high - got.low)


def test_paired_bootstrap_refuses_unpaired_stacks() -> None:
    a = per_image(10, 0.8, seed=1)
    with pytest.raises(ValueError, match="same shape"):
        paired_bootstrap(a, a[:9])
    with pytest.raises(ValueError, match="resamples=0"):
        paired_bootstrap(a, a, resamples=0)
