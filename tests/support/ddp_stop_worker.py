"""A process-group worker for tests/system/test_interrupt.py: under DDP a stop request or a NaN seen
by one rank stops every rank at the same iteration, so none is left waiting in a collective."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import torch
import torch.distributed as dist

from imas import distributed
from imas.finite import NonFiniteError
from imas.train import Interrupted
from support import ddp_worker


def spawn_within(worker: Callable[..., None], world: int, seconds: float) -> None:
    """`ddp_worker.spawn`, but a rank still running after `seconds` (one waiting for the
    others in a collective) fails the test instead of hanging it."""
    context = torch.multiprocessing.spawn(
        worker, args=(world, ddp_worker.free_port()), nprocs=world, join=False
    )
    deadline = time.monotonic() + seconds
    while not context.join(timeout=1):  # raises when a rank failed
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            raise AssertionError(f"ranks still running after {seconds} s: one waits for the other")


def stop_worker(rank: int, world: int, port: int) -> None:
    ddp_worker._torchrun_env(rank, world, port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    try:
        # A signal that reached rank 1 only, before iteration 3 (the 4th question).
        asked = [0]

        def should_stop() -> bool:
            asked[0] += 1
            return rank == 1 and asked[0] == 4

        saved: list[int] = []
        try:
            ddp_worker._fit_squares(
                rank, should_stop=should_stop, on_checkpoint=lambda s: saved.append(s["step"])
            )
        except Interrupted as stop:
            assert distributed.gather_objects(stop.step) == [3] * world
        else:
            raise AssertionError("fit did not stop")
        assert saved == ([3] if rank == 0 else [])  # one resume state, by rank 0

        # A NaN from rank 1's model only, in iteration 2: every rank raises there.
        class NaNAfterTwo(ddp_worker.PixelNet):
            forwards = 0

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                out = super().forward(x)
                if rank == 1 and torch.is_grad_enabled():
                    NaNAfterTwo.forwards += 1
                    if NaNAfterTwo.forwards > 2:
                        out = out * math.nan
                return out

        ddp_worker.PixelNet = NaNAfterTwo
        try:
            ddp_worker._fit_squares(rank)
        except NonFiniteError as err:
            messages = distributed.gather_objects(str(err))
            assert all("non-finite loss at iteration 2 (epoch 0): loss=nan" in m for m in messages)
        else:
            raise AssertionError("fit trained through a NaN")
    finally:
        dist.destroy_process_group()
