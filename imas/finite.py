"""The finiteness checks that keep a NaN from reaching an update or a checkpoint."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import torch


class NonFiniteError(FloatingPointError):
    """A loss or a checkpoint holds NaN or Inf; the message says where (iteration, keys)."""


def nonfinite_keys(obj: Any, prefix: str = "") -> list[str]:
    """Dotted paths of the floating-point tensors in a nested dict/list/tuple that hold NaN or
    Inf (`student.head.weight`, `optimizer.state.3.momentum_buffer`); [] when all are finite.

    Plain floats are not checked: a resume state's best mIoU is legitimately -inf before the
    first evaluation.
    """
    if isinstance(obj, torch.Tensor):
        finite = not (obj.is_floating_point() or obj.is_complex()) or bool(obj.isfinite().all())
        return [] if finite else [prefix or "<tensor>"]
    if isinstance(obj, Mapping):
        items: Iterable = obj.items()
    elif isinstance(obj, list | tuple):
        items = enumerate(obj)
    else:
        return []
    found: list[str] = []
    for key, value in items:
        found += nonfinite_keys(value, f"{prefix}.{key}" if prefix else str(key))
    return found


def check_finite_loss(stats: Mapping[str, float], step: int, epoch: int) -> None:
    """Raise NonFiniteError naming the iteration and every loss component when any loss is NaN
    or Inf. Called before backward: the weights (and any checkpoint) stay those of the last
    good iteration."""
    losses = {k: v for k, v in stats.items() if k.startswith("loss")}
    if all(math.isfinite(v) for v in losses.values()):
        return
    shown = ", ".join(f"{k}={v}" for k, v in losses.items())
    raise NonFiniteError(
        f"non-finite loss at iteration {step} (epoch {epoch}): {shown}; training stopped "
        "before this update"
    )
