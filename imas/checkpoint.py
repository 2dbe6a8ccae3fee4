"""What exact resume needs beyond weights: every RNG stream and each loader's position; and
the finiteness checks that keep a NaN from reaching a checkpoint.

Everything here is tensors and plain Python values, so a resume state round-trips through
`torch.load(weights_only=True)`.
"""

from __future__ import annotations

import math
import random
import sys
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import numpy as np
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


def canonical(obj: Any) -> Any:
    """A copy of a nested payload (dicts, lists, tuples) whose bytes under pickle depend on its
    values only: every string interned, every container new, tensors and other leaves as they are.

    pickle writes a second occurrence of the same object as a back-reference, so two equal
    payloads built differently pickle differently: after a resume, the best snapshot's keys are
    strings read from the resume file where an uninterrupted run has the interpreter's literals,
    and the checkpoint's bytes (and its DVC hash) changed although every value was the same.
    A state dict's `_metadata` (module versions) is kept, canonical too.
    """
    if type(obj) is str:
        return sys.intern(obj)
    if isinstance(obj, Mapping):
        out: dict[Any, Any] = OrderedDict() if isinstance(obj, OrderedDict) else {}
        for key, value in obj.items():
            out[canonical(key)] = canonical(value)
        metadata = getattr(obj, "_metadata", None)
        if metadata is not None:
            out._metadata = canonical(metadata)  # type: ignore[attr-defined]
        return out
    if type(obj) is list:
        return [canonical(value) for value in obj]
    if type(obj) is tuple:
        return tuple(canonical(value) for value in obj)
    return obj


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


def rng_state() -> dict[str, Any]:
    """The global RNG states of python, numpy and torch (CPU; CUDA too when in use)."""
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": {
            "version": version,
            "state": torch.tensor(internal, dtype=torch.int64),
            "gauss": gauss,
        },
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"].tolist()), py["gauss"]))
    npy = state["numpy"]
    keys = npy["keys"].numpy().astype(np.uint32)
    np.random.set_state((npy["kind"], keys, npy["pos"], npy["has_gauss"], npy["cached"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state:
        torch.cuda.set_rng_state_all(state["cuda"])


class Stream(Iterator):
    """Endless batches from a loader, one pass after another (each pass reshuffles), that can
    report and restore its position.

    The position is the RNG state at the start of the current pass (torch's global RNG and the
    loader's own generator, the two a DataLoader's shuffle may draw from), the pass's number and
    the number of batches consumed in it. `restore` replays the pass's shuffle and skips that
    many batches of indices without loading a single image (single-process DataLoaders; plain
    iterables, the tests' stand-ins, are simply consumed).

    A sampler with `set_epoch` (DistributedSampler, which shuffles by seed + epoch rather than
    from an RNG) is told the pass number before each pass, so every pass reshuffles the shard.
    """

    def __init__(self, loader: Iterable) -> None:
        self.loader = loader
        self._it: Iterator | None = None
        self._start: dict[str, Any] | None = None
        self._consumed = 0
        self._pass = -1  # none started yet

    def _begin_pass(self) -> Iterator:
        sampler = getattr(self.loader, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(self._pass)
        return iter(self.loader)

    def _pass_start(self) -> dict[str, Any]:
        start: dict[str, Any] = {"torch": torch.get_rng_state()}
        generator = getattr(self.loader, "generator", None)
        if generator is not None:
            start["loader"] = generator.get_state()
        return start

    def __next__(self) -> Any:
        while True:
            if self._it is None:
                self._start = self._pass_start()
                self._pass += 1
                self._it = self._begin_pass()
                self._consumed = 0
            try:
                batch = next(self._it)
            except StopIteration:
                if self._consumed == 0:  # a pass with no batch: retrying would spin forever
                    raise ValueError(
                        "a loader yields no batch in a whole pass: fewer samples than the batch "
                        "size in its data or this process's shard (the training loaders drop "
                        "the last, incomplete batch)"
                    ) from None
                self._it = None
                continue
            self._consumed += 1
            return batch

    def state(self) -> dict[str, Any] | None:
        """None before the first batch; afterwards the pass (its start and number) and the batches
        consumed in it."""
        if self._it is None:
            return None
        return {"start": self._start, "pass": self._pass, "consumed": self._consumed}

    def restore(self, state: dict[str, Any] | None) -> None:
        """Put the stream where `state` was taken. Leaves torch's global RNG changed: the caller
        restores the global RNG states afterwards."""
        self._it, self._start, self._consumed, self._pass = None, None, 0, -1
        if state is None:
            return
        start = state["start"]
        torch.set_rng_state(start["torch"])
        generator = getattr(self.loader, "generator", None)
        if ("loader" in start) != (generator is not None):
            raise ValueError("resume state and loader disagree on whether the loader is seeded")
        if generator is not None:
            generator.set_state(start["loader"])
        self._pass = state["pass"]
        it = self._begin_pass()
        if isinstance(self.loader, torch.utils.data.DataLoader):
            if self.loader.num_workers > 0:
                raise ValueError(
                    "exact resume needs a single-process loader (runtime.num_workers: 0): worker "
                    "processes draw their augmentations from RNG streams a checkpoint cannot hold"
                )
            for _ in range(state["consumed"]):
                next(it._sampler_iter)  # the indices only: no image is loaded
        else:
            for _ in range(state["consumed"]):
                next(it)
        self._it, self._start, self._consumed = it, start, state["consumed"]
