"""Process-group workers for tests/system/test_distributed.py: each runs in its own spawned process
(torch.multiprocessing spawns them by importing this module), one per rank, on gloo."""

from __future__ import annotations

import io
import os
import random
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from imas import distributed
from imas.config import SpeedConfig
from imas.evaluate import evaluate
from imas.train import FitResult, fit
from support.training import PixelNet, Squares, config, fit_options


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn(worker: Callable[..., None], world: int, *args: Any) -> None:
    """Run `worker(rank, world, port, *args)` on `world` processes; raises if any rank fails."""
    torch.multiprocessing.spawn(worker, args=(world, free_port(), *args), nprocs=world)


def _torchrun_env(rank: int, world: int, port: int) -> None:
    """What torchrun would export for this rank."""
    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_WORLD_SIZE=str(world),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )


# totals 4 + 4 per optimizer step: 2 + 2 per rank
CFG = config("imas").model_copy(update={"batch_labeled": 4, "lr": 0.05})


def _loader(dataset: torch.utils.data.Dataset, seed: int, rank: int) -> torch.utils.data.DataLoader:
    sampler = torch.utils.data.DistributedSampler(dataset, seed=seed, drop_last=True)
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=2,
        sampler=sampler,
        drop_last=True,
        generator=torch.Generator().manual_seed(distributed.rank_seed(seed, rank)),
    )


def _fit_squares(rank: int, **kwargs: Any) -> FitResult:
    """A 2 × 3-step iMAS fit of this rank, every RNG seeded as a stage would."""
    torch.manual_seed(0)
    model = PixelNet()
    seed = distributed.rank_seed(0, rank)
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed)
    val = Squares(5, True, 3)
    mine = list(distributed.shard(len(val), rank, distributed.world_size()))
    val_batches = [(val.images[mine], val.masks[mine])]
    return fit(
        model,
        _loader(Squares(8, True, 1, augment=True), 0, rank),
        _loader(Squares(16, False, 2, augment=True), 2**32, rank),
        CFG,
        **fit_options(
            {"iters_per_epoch": CFG.iters_per_epoch, "strong_ops": 2},
            {"evaluate": lambda m: evaluate(m, val_batches, 3, across_ranks=True)["miou"]},
            {"generator": torch.Generator().manual_seed(seed), **kwargs},
        ),
    )


def _weights_bytes(result: FitResult) -> bytes:
    tensors = [
        t for kind in ("best", "last") for w in getattr(result, kind).values() for t in w.values()
    ]
    return b"".join(t.numpy().tobytes() for t in tensors)


def _assert_same(a: FitResult, b: FitResult, what: str) -> None:
    assert a.history == b.history, what
    assert a.hardness == b.hardness, what
    assert (a.best_epoch, a.best_miou) == (b.best_epoch, b.best_miou), what
    assert _weights_bytes(a) == _weights_bytes(b), what


def fit_worker(rank: int, world: int, port: int, folder: str) -> None:
    """DDP fit: ranks end with one model, hardness covers every rank, and resuming from any
    resume state (every rank's streams saved by rank 0) finishes bit-identically."""
    _torchrun_env(rank, world, port)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    dist.init_process_group("gloo")
    try:
        logged: list[tuple[dict[str, float], int]] = []
        plain = _fit_squares(rank, log=lambda m, s: logged.append((m, s)), log_every=1)
        # Students and teachers, parameters and BatchNorm buffers: equal on every rank.
        others = distributed.gather_objects(_weights_bytes(plain))
        assert all(w == others[0] for w in others), "ranks hold different models"
        # Losses, easiness, CutMix rate: averaged over ranks, so every rank logs the same.
        logs = distributed.gather_objects(logged)
        assert len(logged) == 2 * 3 + 2 and all(log == logs[0] for log in logs)
        per_epoch = CFG.iters_per_epoch * CFG.batch_unlabeled  # both ranks' images
        assert [len(h) for h in plain.hardness] == [per_epoch] * CFG.epochs

        saved: list[Path] = []

        def keep(state: dict[str, Any]) -> None:
            assert distributed.is_main(), "on_checkpoint called on a rank other than 0"
            path = Path(folder) / f"state{state['step']}.pt"
            buf = io.BytesIO()
            torch.save(state, buf)
            path.write_bytes(buf.getvalue())
            saved.append(path)

        checkpointing = _fit_squares(rank, checkpoint_every=2, on_checkpoint=keep)
        _assert_same(checkpointing, plain, "checkpointing changed the run")
        dist.barrier()  # rank 0's files are written
        states = sorted(Path(folder).glob("state*.pt"))
        assert [p.name for p in states] == ["state2.pt", "state4.pt"]
        for path in states:
            state = torch.load(path, weights_only=True)
            assert state["world_size"] == world and len(state["ranks"]) == world
            resumed = _fit_squares(rank, resume_state=state)
            _assert_same(resumed, plain, f"resumed from {path.name}")

        try:
            _fit_squares(rank, speed=SpeedConfig.off().model_copy(update=dict(sync_bn=True)))
        except ValueError as err:
            assert "runtime.sync_bn" in str(err) and "CUDA" in str(err), err
        else:
            raise AssertionError("sync_bn on CPU ran")
    finally:
        dist.destroy_process_group()


def stage_worker(rank: int, world: int, port: int, workdir: str, record: str) -> None:
    """One rank of the `train` stage, run in process (no relaunch): records which files the
    rank writes and what its evaluations return, in `record`/rank<N>.pt."""
    import pipeline.training.runner as training
    from pipeline.config.params import load_params

    _torchrun_env(rank, world, port)
    os.chdir(workdir)
    writes: list[tuple[str, str]] = []
    evals: list[dict[str, Any]] = []

    def spy(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapped(path: Any, *args: Any, **kwargs: Any) -> Any:
            writes.append((name, str(path)))
            return fn(path, *args, **kwargs)

        return wrapped

    for name in ("save_checkpoint", "write_json", "write_history", "write_hardness", "save_resume"):
        setattr(training, name, spy(name, getattr(training, name)))
    real_evaluate = training.evaluate

    def evaluate_spy(*args: Any, **kwargs: Any) -> dict[str, Any]:
        scores = real_evaluate(*args, **kwargs)
        evals.append({"miou": scores["miou"], "confusion": scores["confusion"].clone()})
        return scores

    training.evaluate = evaluate_spy
    params = load_params("params.yaml")
    summary = training.run_training(
        "train",
        params,
        params.train,
        data=Path("data/garments"),  # the stages' default root, digit scenes here
        split=Path("data/split"),
        out=Path("models/ddp.pt"),
        metrics=Path("metrics/ddp.json"),
        history=Path("metrics/ddp_history.csv"),
        init=Path("models/warmup.pt"),
        hardness=Path("metrics/ddp_hardness.csv"),
    )
    out = {
        "writes": writes,
        "evals": evals,
        "summary": summary,
        "threads": torch.get_num_threads(),
        "seed": torch.initial_seed(),  # of the augmentation stream
    }
    torch.save(out, Path(record) / f"rank{rank}.pt")
