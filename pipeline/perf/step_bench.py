"""Cost of one training step by method, the hardness share of an iMAS step, and a profile.

All methods start from the same weights and see the same batches in the same order; steps are
timed through `fit`'s per-step log callback, so the measured loop is the real one (no copy of
the step). The hardness share wraps the functions `imas.train` calls for γ with timers.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterable, Iterator, Sized
from contextlib import contextmanager
from typing import Any, cast

import torch
from torch import nn

import imas.train as train_module
from imas.config import TrainConfig
from imas.train import Hooks, Plan, fit

# What `imas.train` calls only to compute γ: the student's max/argmax and the maps-to-γ step.
# The teacher's max/argmax (the pseudo labels) and confident ratio (logged by every
# teacher–student run) are not counted.
_HARDNESS_FUNCTIONS = ("confidence_maps", "hardness_from_maps")


@contextmanager
def _timed(names: Iterable[str], seconds: list[float]) -> Iterator[None]:
    originals = {name: getattr(train_module, name) for name in names}

    def wrap(fn: Callable) -> Callable:
        def timed(*args, **kwargs):
            start = time.perf_counter()
            out = fn(*args, **kwargs)
            seconds.append(time.perf_counter() - start)
            return out

        return timed

    for name, fn in originals.items():
        setattr(train_module, name, wrap(fn))
    try:
        yield
    finally:
        for name, fn in originals.items():
            setattr(train_module, name, fn)


def _train(
    make_model: Callable[[], nn.Module],
    batches: Callable[[], tuple[Iterable, Iterable]],
    cfg: TrainConfig,
    strong_ops: int,
    steps: int,
    seed: int = 0,
    log: Callable[[dict[str, float], int], None] | None = None,
) -> None:
    """`steps` iterations of the real `fit` in one epoch, with an evaluation that costs nothing;
    with `log`, every step's diagnostics go to it."""
    labeled, unlabeled = batches()
    torch.manual_seed(seed)
    fit(
        make_model(),
        labeled,
        unlabeled,
        cfg.model_copy(update={"epochs": 1, "iters_per_epoch": steps, "eval_every": 1}),
        Plan(iters_per_epoch=steps, strong_ops=strong_ops, log_every=1),
        Hooks(evaluate=lambda model: 0.0, log=log or (lambda metrics, step: None)),
        generator=torch.Generator().manual_seed(seed),
    )


def step_times(
    make_model: Callable[[], nn.Module],
    batches: Callable[[], tuple[Iterable, Iterable]],
    cfg: TrainConfig,
    strong_ops: int,
    steps: int,
    skip: int = 2,
    seed: int = 0,
) -> dict[str, float]:
    """Median seconds per step of `fit` under `cfg`, after `skip` warm-up steps, and the share
    of the hardness functions in those steps."""
    stamps: list[float] = []
    hardness_seconds: list[float] = []
    counted: list[int] = []

    def log(metrics: dict[str, float], step: int) -> None:
        if any(key.startswith("step/") for key in metrics):  # not the epoch summary
            stamps.append(time.perf_counter())
            counted.append(len(hardness_seconds))

    with _timed(_HARDNESS_FUNCTIONS, hardness_seconds):
        _train(make_model, batches, cfg, strong_ops, steps + 1, seed, log=log)
    # stamps[i] is taken at the end of step i (the log call): step i's time is the difference.
    durations = [b - a for a, b in zip(stamps[skip:-1], stamps[skip + 1 :], strict=True)]
    in_hardness = sum(hardness_seconds[counted[skip] : counted[-1]])
    return {
        "step_ms": round(1000 * statistics.median(durations), 2),
        "hardness_share": round(in_hardness / sum(durations), 4) if durations else 0.0,
        "steps": len(durations),
    }


def compare_methods(
    make_model: Callable[[], nn.Module],
    batches: Callable[[], tuple[Iterable, Iterable]],
    cfg: TrainConfig,
    strong_ops: int,
    steps: int,
) -> dict[str, Any]:
    """Step time of supervised, mean teacher and iMAS (with and without the weak-view group in
    the training forward), same model, batch and data; ratios to mean teacher."""
    variants = {
        "supervised": cfg.model_copy(update={"method": "supervised"}),
        "mean_teacher": cfg.model_copy(update={"method": "mean_teacher"}),
        "imas": cfg.model_copy(update={"method": "imas", "drop_weak_forward": False}),
        "imas_drop_weak": cfg.model_copy(update={"method": "imas", "drop_weak_forward": True}),
        "mean_teacher_drop_weak": cfg.model_copy(
            update={"method": "mean_teacher", "drop_weak_forward": True}
        ),
    }
    results = {
        name: step_times(make_model, batches, variant, strong_ops, steps)
        for name, variant in variants.items()
    }
    mt = results["mean_teacher"]["step_ms"]
    return {
        "methods": results,
        "imas_over_mean_teacher": round(results["imas"]["step_ms"] / mt, 3),
        "imas_drop_weak_over_mean_teacher_drop_weak": round(
            results["imas_drop_weak"]["step_ms"] / results["mean_teacher_drop_weak"]["step_ms"],
            3,
        ),
    }


def profile_steps(
    make_model: Callable[[], nn.Module],
    batches: Callable[[], tuple[Iterable, Iterable]],
    cfg: TrainConfig,
    strong_ops: int,
    steps: int,
    rows: int = 15,
) -> str:
    """torch.profiler table (self CPU time) of `steps` iMAS steps."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        _train(make_model, batches, cfg, strong_ops, steps)
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)


def eval_throughput(params: Any, data: Any, model: nn.Module) -> float:
    """Images per second of a whole-val evaluation (the default pipeline's loader)."""
    from imas.evaluate import evaluate
    from pipeline.training.loaders import val_loader

    loader = val_loader(params, data)
    images = len(cast(Sized, loader.dataset))
    evaluate(model, loader, params.model.num_classes)  # warm-up (decodes and caches images)
    start = time.perf_counter()
    evaluate(model, loader, params.model.num_classes)
    return round(images / (time.perf_counter() - start), 1)
