"""Which process of a multi-machine job this is, when torchrun did not say: a task of a SLURM
`srun` step, mapped to the environment torch's process group reads.

`srun` starts every process itself (one task per GPU, `--ntasks-per-node`) and describes it in
SLURM_* variables; torchrun describes its children in RANK, WORLD_SIZE, LOCAL_RANK,
LOCAL_WORLD_SIZE, MASTER_ADDR and MASTER_PORT. A training stage started as a task of a step with
more than one task takes the second set from the first, so `srun imas train` needs no wrapper:

* RANK ← SLURM_PROCID, WORLD_SIZE ← SLURM_STEP_NUM_TASKS, LOCAL_RANK ← SLURM_LOCALID;
* LOCAL_WORLD_SIZE ← this node's entry (SLURM_NODEID) of SLURM_STEP_TASKS_PER_NODE (`4(x2),3`
  means 4, 4, 3 tasks on nodes 0, 1, 2);
* MASTER_ADDR ← the first host of SLURM_STEP_NODELIST (`gpu[07-08,11]` → `gpu07`), unless set;
* MASTER_PORT ← 20000 + SLURM_JOB_ID mod 10000, unless set: jobs sharing a node get other ports.

Only the step variables count: srun sets them for its tasks, while an `salloc` shell or the
batch script itself has none (or a one-task batch step), so a stage run there stays one process.
A process torchrun started (RANK set) is left alone: `srun torchrun ...` works as well.
Torch threads are split among the processes that share a CPU mask (`cpu_sharers`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, MutableMapping

_REPEAT = re.compile(r"^(\d+)(?:\(x(\d+)\))?$")
_RANGE = re.compile(r"^([^\[\],]+)\[([^\]]+)\]")  # a prefix and the first [...]


class ClusterError(RuntimeError):
    """The SLURM environment cannot be read; the message names the variable and its value."""


def tasks_per_node(spec: str) -> list[int]:
    """SLURM's compressed task counts per node: `4(x2),3` → [4, 4, 3]."""
    counts: list[int] = []
    for part in spec.split(","):
        match = _REPEAT.match(part.strip())
        if match is None:
            raise ClusterError(f"SLURM_STEP_TASKS_PER_NODE={spec!r}: expected e.g. 4(x2),3")
        counts += [int(match[1])] * int(match[2] or 1)
    return counts


def first_host(nodelist: str) -> str:
    """The first host of a SLURM host list: `gpu[07-08,11],cpu1` → `gpu07`, `a,b` → `a`."""
    text = nodelist.strip()
    match = _RANGE.match(text)
    if match is not None:
        first = re.split(r"[,-]", match[2], maxsplit=1)[0]
        return match[1] + first  # zero padding kept: gpu[07-08] starts at gpu07
    host = text.split(",", 1)[0]
    if not host or "[" in host:
        raise ClusterError(f"SLURM_STEP_NODELIST={nodelist!r}: no host name found")
    return host


def _whole(env: Mapping[str, str], name: str) -> int:
    raw = env.get(name, "")
    try:
        return int(raw)
    except ValueError:
        raise ClusterError(f"{name}={raw!r}: expected a whole number (set by srun)") from None


def slurm_torch_env(env: Mapping[str, str]) -> dict[str, str]:
    """The torch variables of the module docstring for a task of a multi-task srun step; {} when
    torchrun already set them or this is no such task."""
    if "RANK" in env or "SLURM_STEP_NUM_TASKS" not in env:
        return {}
    world = _whole(env, "SLURM_STEP_NUM_TASKS")
    if world <= 1:
        return {}
    rank, local_rank, node = (
        _whole(env, n) for n in ("SLURM_PROCID", "SLURM_LOCALID", "SLURM_NODEID")
    )
    counts = tasks_per_node(env.get("SLURM_STEP_TASKS_PER_NODE", ""))
    if not 0 <= node < len(counts):
        raise ClusterError(
            f"SLURM_NODEID={node} but SLURM_STEP_TASKS_PER_NODE="
            f"{env.get('SLURM_STEP_TASKS_PER_NODE')!r} lists {len(counts)} nodes"
        )
    if not (0 <= rank < world and 0 <= local_rank < counts[node]):
        raise ClusterError(
            f"SLURM_PROCID={rank} / SLURM_LOCALID={local_rank} outside a step of {world} tasks "
            f"with {counts[node]} on this node"
        )
    out = {
        "RANK": str(rank),
        "WORLD_SIZE": str(world),
        "LOCAL_RANK": str(local_rank),
        "LOCAL_WORLD_SIZE": str(counts[node]),
    }
    if "MASTER_ADDR" not in env:
        out["MASTER_ADDR"] = first_host(env.get("SLURM_STEP_NODELIST", ""))
    if "MASTER_PORT" not in env:
        # Without a job id: 29500, torchrun's default.
        job = _whole(env, "SLURM_JOB_ID") if "SLURM_JOB_ID" in env else 9500
        out["MASTER_PORT"] = str(20000 + job % 10000)
    return out


def cpu_sharers(local_world: int, visible: int, env: Mapping[str, str] | None = None) -> int:
    """How many processes split the CPUs this process sees: every process on the machine
    (`local_world`: torchrun starts them all with one CPU mask), but 1 for a task of an srun
    step that srun bound to CPUs of its own (a task that sees no more than SLURM_CPUS_PER_TASK
    CPUs), which would otherwise be split again."""
    env = os.environ if env is None else env
    per_task = env.get("SLURM_CPUS_PER_TASK", "")
    task = "SLURM_PROCID" in env and env.get("SLURM_STEP_NUM_TASKS") == env.get("WORLD_SIZE")
    if task and per_task.isdigit() and visible <= int(per_task):
        return 1
    return local_world


def adopt_slurm_step(env: MutableMapping[str, str] | None = None) -> dict[str, str]:
    """Export `slurm_torch_env` into `env` (default: this process's environment); returns what
    was set."""
    target = os.environ if env is None else env
    update = slurm_torch_env(target)
    target.update(update)
    return update
