"""Wall-clock timing and the description of the machine a measurement ran on."""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch


def time_call(fn: Callable[[], object], repeats: int, warmup: int = 1) -> dict[str, float]:
    """Milliseconds of `repeats` calls of `fn` after `warmup` untimed ones: min and median.

    The minimum is the figure compared (least disturbed by other processes); the median is
    reported beside it so a noisy run shows.
    """
    if repeats < 1:
        raise ValueError(f"repeats={repeats} must be >= 1")
    for _ in range(warmup):
        fn()
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        runs.append(1000 * (time.perf_counter() - start))
    return {"min_ms": round(min(runs), 3), "median_ms": round(statistics.median(runs), 3)}


def _cpu_model() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _memory_gib() -> float | None:
    meminfo = Path("/proc/meminfo")
    if not meminfo.is_file():
        return None
    for line in meminfo.read_text().splitlines():
        if line.startswith("MemTotal:"):
            return round(int(line.split()[1]) / 1024**2, 1)
    return None


def machine() -> dict[str, Any]:
    """What a reader needs to compare a figure with their own machine's."""
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "memory_gib": _memory_gib(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
    }
