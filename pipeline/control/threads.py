"""Torch threads of a stage, shared among the experiments DVC runs in parallel.

Parallel jobs whose threads outnumber the cores preempt each other in every parallel region:
on 2 cores, two warmups with 2 torch threads each took 1.3–2× as long as with 1 each (issue 7
reported 5–30×). So a stage's threads follow from how many jobs share the machine:

* `runtime.threads: auto`: cores // jobs (at least 1);
* `runtime.threads: N`: N when the stage runs alone, as always; among parallel jobs at most
  cores // jobs (at least 1), so the default 2 cannot oversubscribe a `-j 2` queue on 2 cores.

`jobs` is `IMAS_JOBS` if set (`make sweep` sets it; queue workers pass it on to the stages),
else the number of the project's `dvc queue start -j N` workers alive at stage start (see
pipeline/control/dvc_context.py; a worker still starting is missed), else 1. Thread count
changes the last digits of CPU results (reduction order), so MLflow records what a stage used:
`runtime.threads_effective` and `runtime.parallel_jobs`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pipeline.control.dvc_context import project_root, queue_workers

JOBS_ENV = "IMAS_JOBS"


@dataclass(frozen=True)
class ThreadPlan:
    threads: int
    jobs: int


# What this process's stage applied, for its MLflow run (one stage per process).
_applied: ThreadPlan | None = None


def cpu_count() -> int:
    """Cores this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def parallel_jobs(start: Path | None = None) -> int:
    """Jobs sharing the machine: `IMAS_JOBS`, else the project's running queue workers, ≥ 1."""
    raw = os.environ.get(JOBS_ENV, "").strip()
    if raw:
        try:
            jobs = int(raw)
        except ValueError:
            jobs = 0
        if jobs < 1:
            raise ValueError(f"{JOBS_ENV}={raw!r}: expected a whole number of jobs, 1 or more")
        return jobs
    return max(1, queue_workers(project_root(start)))


def threads_per_job(setting: int | Literal["auto"], cpus: int, jobs: int) -> int:
    """The rule of the module docstring."""
    share = max(1, cpus // jobs)
    if setting == "auto":
        return share
    return setting if jobs == 1 else min(setting, share)


def apply_threads(setting: int | Literal["auto"], processes: int = 1) -> ThreadPlan:
    """Set torch's intra-op threads by `runtime.threads` and the parallel jobs (split again
    among a job's `processes` under torchrun); return both."""
    import torch

    global _applied
    jobs = parallel_jobs()
    torch.set_num_threads(max(1, threads_per_job(setting, cpu_count(), jobs) // processes))
    _applied = ThreadPlan(threads=torch.get_num_threads(), jobs=jobs)
    return _applied


def applied() -> ThreadPlan | None:
    """The plan `apply_threads` set in this process, if it was called."""
    return _applied
