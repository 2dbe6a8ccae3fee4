"""A stage process's runtime before any work: torch threads, determinism and the device."""

from __future__ import annotations

import torch

from imas import distributed
from pipeline.config.sections import RuntimeParams
from pipeline.control.threads import apply_threads


def setup_runtime(runtime: RuntimeParams, seed: int) -> torch.device:
    """Threads, determinism and device; returns the device to train on.

    Threads are shared fairly among parallel queue jobs, and the processes torchrun starts on
    one machine split a job's share: each takes `threads // processes` (at least one) and, on
    CUDA, the GPU of its local rank.
    """
    apply_threads(runtime.threads, processes=distributed.local_world())
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
    torch.cuda.set_device(distributed.local_rank())
    return torch.device("cuda", distributed.local_rank())
