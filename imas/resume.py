"""Exact resume of `fit`: the loop's progress, every RNG stream and each loader's position,
captured into a state of tensors and plain values (it round-trips through
`torch.load(weights_only=True)`) and restored from one, checked against the run's shape.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import torch
from torch import Tensor, nn

from imas import distributed

# 2: the RNG streams and loader positions are kept per rank (`ranks`), for DDP runs.
# 3: the LR schedule's offset and length (a run continuing another's schedule).
RESUME_FORMAT = 3


@dataclass
class Progress:
    """What the training loop has done so far: the iteration it is at, the finished epochs'
    history, hardness and best weights, and the current epoch's running sums."""

    step: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    hardness: list[list[float]] = field(default_factory=list)
    best: dict[str, dict[str, Tensor] | None] = field(
        default_factory=lambda: {"student": None, "teacher": None}
    )
    best_miou: float = -math.inf
    best_epoch: int = -1
    sums: dict[str, float] = field(default_factory=dict)
    epoch_gamma: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class RunShape:
    """What a resume state must match: a state from another run shape would train on silently
    wrong."""

    method: str
    total: int
    iters_per_epoch: int
    world_size: int
    schedule: tuple[int, int]

    def as_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "total": self.total,
            "iters_per_epoch": self.iters_per_epoch,
            "world_size": self.world_size,
            "schedule": list(self.schedule),
        }


def capture(
    shape: RunShape,
    progress: Progress,
    student: nn.Module,
    teacher: nn.Module | None,
    optimizer: torch.optim.Optimizer,
    streams: dict[str, Stream | None],
    generator: torch.Generator,
) -> dict[str, Any]:
    """The resume state; a collective under DDP (every rank's streams are gathered). It shares
    tensors with the live models: write or copy it before training goes on."""
    mine = {
        "rng": rng_state(),
        "generator": generator.get_state(),
        "loaders": {name: None if s is None else s.state() for name, s in streams.items()},
    }
    return {
        "format": RESUME_FORMAT,
        **shape.as_dict(),
        "step": progress.step,
        "student": student.state_dict(),
        "teacher": None if teacher is None else teacher.state_dict(),
        "optimizer": optimizer.state_dict(),
        "ranks": distributed.gather_objects(mine),
        "history": progress.history,
        "hardness": progress.hardness,
        "best": progress.best,
        "best_miou": progress.best_miou,
        "best_epoch": progress.best_epoch,
        "sums": progress.sums,
        "epoch_gamma": progress.epoch_gamma,
    }


def check(state: dict[str, Any], shape: RunShape) -> None:
    """Refuse a resume state of another format or run shape, naming what differs."""
    if state.get("format") != RESUME_FORMAT:
        found = state.get("format")
        raise ValueError(f"resume state has format {found!r}, expected {RESUME_FORMAT}")
    for key, value in shape.as_dict().items():
        if state[key] != value:
            raise ValueError(f"resume state has {key}={state[key]!r}, this run {value!r}")
    if not 0 < state["step"] < shape.total:
        raise ValueError(f"resume state step {state['step']} is outside 1..{shape.total - 1}")


def restore(
    state: dict[str, Any],
    shape: RunShape,
    student: nn.Module,
    teacher: nn.Module | None,
    optimizer: torch.optim.Optimizer,
    streams: dict[str, Stream | None],
    generator: torch.Generator,
) -> Progress:
    """Load `state` (checked first) into the models, optimizer, streams and RNGs; its progress."""
    check(state, shape)
    student.load_state_dict(state["student"])
    if teacher is not None:
        teacher.load_state_dict(state["teacher"])
    optimizer.load_state_dict(state["optimizer"])
    progress = Progress(
        step=state["step"],
        history=list(state["history"]),
        hardness=list(state["hardness"]),
        best=state["best"],
        best_miou=state["best_miou"],
        best_epoch=state["best_epoch"],
        sums=dict(state["sums"]),
        epoch_gamma=list(state["epoch_gamma"]),
    )
    mine = state["ranks"][distributed.rank()]
    for name, stream in streams.items():
        if stream is not None:
            stream.restore(mine["loaders"][name])
    set_rng_state(mine["rng"])  # after the loaders: replaying a shuffle moves torch's RNG
    generator.set_state(mine["generator"])
    return progress


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
            "keys": torch.from_numpy(np.asarray(keys).astype(np.int64)),
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
        set_epoch = getattr(getattr(self.loader, "sampler", None), "set_epoch", None)
        if set_epoch is not None:
            set_epoch(self._pass)
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
                next(cast(Any, it)._sampler_iter)  # the indices only: no image is loaded
        else:
            for _ in range(state["consumed"]):
                next(it)
        self._it, self._start, self._consumed = it, start, state["consumed"]
