"""Data-parallel helpers for `fit` and the stages: process group from torchrun's environment,
rank queries, sharding and the few collectives training needs.

Every helper is a no-op (or returns the trivial answer) when no process group is running, so
single-process code calls them unconditionally and stays exactly as it was.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

# Rank r trains with seed + r·stride: a prime stride keeps the rank streams of nearby seeds apart
# (seed 1 rank 0 is not seed 0 rank 1), and rank 0 keeps the single-process seed.
_RANK_SEED_STRIDE = 1_000_003


def active() -> bool:
    """A process group with more than one process is running."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def is_main() -> bool:
    """The process that logs and writes: rank 0, or the only process."""
    return rank() == 0


def launched_world() -> int:
    """WORLD_SIZE as torchrun set it (1 outside torchrun); readable before the group starts."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def local_world() -> int:
    """Processes torchrun started on this machine (1 outside torchrun): they share its cores."""
    return int(os.environ.get("LOCAL_WORLD_SIZE", "1"))


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def rank_seed(seed: int, rank_: int) -> int:
    """The seed of rank `rank_`'s augmentation streams; `seed` itself for rank 0."""
    return seed + _RANK_SEED_STRIDE * rank_


@contextmanager
def process_group(device: torch.device) -> Iterator[None]:
    """Join the process group torchrun described in the environment (gloo on CPU, nccl on
    CUDA) for the duration of the block; nothing to do outside torchrun or when one already
    runs (the caller that started it ends it)."""
    if launched_world() == 1 or dist.is_initialized():
        yield
        return
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        yield
    finally:
        dist.destroy_process_group()


def shard(length: int, rank_: int, world: int) -> range:
    """Indices of `length` items that rank `rank_` of `world` takes: every world-th from its
    rank. Together the ranks cover each index exactly once (no padding duplicates, unlike
    DistributedSampler), at the cost of shards differing in size by one."""
    if not 0 <= rank_ < world:
        raise ValueError(f"rank {rank_} outside 0..{world - 1}")
    return range(rank_, length, world)


def all_reduce_sum(tensor: Tensor) -> Tensor:
    """Sum `tensor` over ranks in place (every rank gets the total); returns it."""
    if active():
        dist.all_reduce(tensor)
    return tensor


def mean_over_ranks(values: dict[str, float]) -> dict[str, float]:
    """Each value averaged over ranks; the keys must be the same on every rank."""
    if not active():
        return values
    keys = sorted(values)
    total = torch.tensor([values[k] for k in keys], dtype=torch.float64)
    if dist.get_backend() == "nccl":
        total = total.cuda()
    dist.all_reduce(total)
    return dict(zip(keys, (total / world_size()).tolist(), strict=True))


def any_rank(flag: bool) -> bool:
    """True on every rank when `flag` is true on at least one, so the ranks act on a local
    event (a signal) together instead of one leaving the others waiting in a collective."""
    if not active():
        return flag
    total = torch.tensor([int(flag)])
    if dist.get_backend() == "nccl":
        total = total.cuda()
    dist.all_reduce(total)
    return bool(total.item())


def gather_cat(tensor: Tensor) -> Tensor:
    """Rank 0's tensor, then rank 1's, …, concatenated along dim 0 on every rank (the tensors
    must have the same shape on every rank)."""
    if not active():
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts)


def gather_objects(obj: Any) -> list[Any]:
    """`obj` of every rank, in rank order (picklable objects; tensors travel as they are)."""
    if not active():
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any) -> Any:
    """Rank 0's `obj` on every rank (what the other ranks pass is ignored): a file only rank 0
    can read (on several machines, only rank 0's holds the files it wrote) reaches them all."""
    if not active():
        return obj
    box = [obj if rank() == 0 else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


@torch.no_grad()
def average_buffers(module: nn.Module) -> None:
    """Average the buffers (BatchNorm's running statistics) over ranks, so every rank holds the
    same model: DDP keeps parameters in step, but each rank's BatchNorm tracked its own batch."""
    if not active():
        return
    for buf in module.buffers():
        dist.all_reduce(buf)
        if buf.is_floating_point():
            buf.div_(world_size())
        else:  # equal counters on every rank (num_batches_tracked): exact
            buf.floor_divide_(world_size())


def wrap(module: nn.Module, device: torch.device, *, sync_bn: bool, find_unused: bool) -> nn.Module:
    """`module` for the training forward: DistributedDataParallel over the process group
    (after converting BatchNorm to SyncBatchNorm with `sync_bn`), or `module` itself without one.

    DDP starts every rank from rank 0's parameters and buffers. It does not broadcast buffers
    on every forward: `average_buffers` after each optimizer step keeps them equal instead,
    with every rank's batches in the average.
    """
    if not active():
        return module
    if sync_bn:
        if device.type != "cuda":
            raise ValueError(
                "runtime.sync_bn: true needs CUDA devices (torch's SyncBatchNorm has no CPU "
                "kernel); set it to false on CPU"
            )
        module = nn.SyncBatchNorm.convert_sync_batchnorm(module)
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(
        module, device_ids=ids, forward_sync_buffers=False, find_unused_parameters=find_unused
    )
