"""A stage process's runtime before any work: torch threads, determinism and the device."""

from __future__ import annotations

import torch

from imas import distributed
from pipeline.config.sections import RuntimeParams
from pipeline.control.cluster import cpu_sharers
from pipeline.control.threads import apply_threads, cpu_count


def setup_runtime(runtime: RuntimeParams, seed: int) -> torch.device:
    """Threads, determinism and device; returns the device to train on.

    Threads are shared fairly among parallel queue jobs, and the processes torchrun starts on
    one machine split a job's share: each takes `threads // processes` (at least one; srun
    tasks bound to CPUs of their own do not split again) and, on CUDA, the GPU of its local
    rank.
    """
    apply_threads(runtime.threads, processes=cpu_sharers(distributed.local_world(), cpu_count()))
    torch.manual_seed(seed)
    if runtime.device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("runtime.device is 'cuda' but no CUDA device is available")
    use_cuda = runtime.device == "cuda" or (runtime.device == "auto" and torch.cuda.is_available())
    if not use_cuda:
        # CPU kernels are deterministic with this flag; same seed, same numbers.
        torch.use_deterministic_algorithms(True)
        return torch.device("cpu")
    if distributed.local_world() == 1:
        return torch.device("cuda")
    index = cuda_index(
        distributed.local_rank(), distributed.local_world(), torch.cuda.device_count()
    )
    torch.cuda.set_device(index)
    return torch.device("cuda", index)


def cuda_index(local_rank: int, local_world: int, visible: int) -> int:
    """The GPU of local process `local_rank` of `local_world`: its LOCAL_RANK when it sees the
    node's GPUs (torchrun, `srun --gpus-per-node`), 0 when the launcher left it one (`srun
    --gpus-per-task=1` sets CUDA_VISIBLE_DEVICES per task)."""
    if visible == 1:
        return 0
    if local_rank < visible:
        return local_rank
    raise RuntimeError(
        f"LOCAL_RANK={local_rank} of {local_world} processes on this machine, but this process "
        f"sees {visible} CUDA devices: start at most one process per GPU"
    )
