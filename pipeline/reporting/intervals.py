"""Uncertainty for paired comparisons of two methods (issue 17's verdict): a Student-t interval
over seeds, and a paired bootstrap over scenes from per-image confusion matrices.

Both compare methods that share everything but the method: the same warmup and seed (the
t-interval's pairs), or the same test scenes (the bootstrap resamples scene indices once and
scores both methods on that resample). numpy and scipy only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class Interval:
    """An estimate with its two-sided interval at `level`, in the units of the inputs."""

    estimate: float
    low: float
    high: float
    level: float

    def as_json(self) -> dict[str, float | list[float]]:
        return {"estimate": self.estimate, "ci95": [self.low, self.high]}


def paired_t(differences: Sequence[float], level: float = 0.95) -> Interval:
    """Mean of paired differences (one per seed) with its Student-t interval.

    With one pair there is no spread: the interval is (−inf, inf), so a rule that needs a lower
    bound can never pass on one seed. Raises ValueError on no pairs or a non-finite value.
    """
    d = np.asarray(differences, dtype=np.float64)
    if d.size == 0 or not np.isfinite(d).all():
        raise ValueError(f"need one or more finite paired differences, got {list(differences)}")
    mean = float(d.mean())
    if d.size == 1:
        return Interval(mean, -np.inf, np.inf, level)
    half = float(stats.t.ppf(0.5 + level / 2, df=d.size - 1) * d.std(ddof=1) / np.sqrt(d.size))
    return Interval(mean, mean - half, mean + half, level)


def miou_from_confusion(confusion: np.ndarray) -> np.ndarray:
    """mIoU (in points) of confusion matrices `[..., C, C]` (rows target, columns prediction),
    over the classes present in the target or the prediction, as `imas.evaluate.iou`."""
    c = np.asarray(confusion, dtype=np.float64)
    inter = np.diagonal(c, axis1=-2, axis2=-1)
    union = c.sum(axis=-1) + c.sum(axis=-2) - inter
    present = union > 0
    iou = np.where(present, inter / np.where(present, union, 1.0), 0.0)
    return 100.0 * iou.sum(axis=-1) / np.maximum(present.sum(axis=-1), 1)


def paired_bootstrap(
    confusions_a: np.ndarray,
    confusions_b: np.ndarray,
    *,
    resamples: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> Interval:
    """mIoU(a) − mIoU(b) on the whole set, with a percentile interval from resampling scenes.

    `confusions_*` are per-image confusion matrices `[N, C, C]` of the same N scenes in the same
    order. Each resample draws N scene indices with replacement, the same ones for both
    methods, sums their matrices and scores both: scene-to-scene variation is what the interval
    carries, and what both methods share cancels. Drawn as multinomial counts, so a resample is
    one matrix product, not a loop over scenes.
    """
    a, b = np.asarray(confusions_a), np.asarray(confusions_b)
    if a.shape != b.shape or a.ndim != 3 or a.shape[1] != a.shape[2] or a.shape[0] == 0:
        raise ValueError(
            f"need two [N, C, C] stacks of the same shape, got {a.shape} and {b.shape}"
        )
    if resamples < 1:
        raise ValueError(f"resamples={resamples} must be >= 1")
    n, classes = a.shape[0], a.shape[1]
    estimate = float(miou_from_confusion(a.sum(0)) - miou_from_confusion(b.sum(0)))
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(n, np.full(n, 1.0 / n), size=resamples).astype(np.float64)
    flat_a, flat_b = a.reshape(n, -1).astype(np.float64), b.reshape(n, -1).astype(np.float64)
    shape = (resamples, classes, classes)
    diffs = miou_from_confusion((counts @ flat_a).reshape(shape)) - miou_from_confusion(
        (counts @ flat_b).reshape(shape)
    )
    tail = (1 - level) / 2
    low, high = np.quantile(diffs, [tail, 1 - tail])
    return Interval(estimate, float(low), float(high), level)
