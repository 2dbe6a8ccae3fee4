"""A SLURM srun task's variables mapped to torch's, and each local process's GPU."""

from __future__ import annotations

import re

import pytest

from pipeline.control.cluster import (
    ClusterError,
    adopt_slurm_step,
    cpu_sharers,
    first_host,
    slurm_torch_env,
    tasks_per_node,
)
from pipeline.control.runtime import cuda_index

# Task 5 of a 2 × 4 step: the second node's second task.
STEP = {
    "SLURM_JOB_ID": "123456",
    "SLURM_STEP_NUM_TASKS": "8",
    "SLURM_STEP_TASKS_PER_NODE": "4(x2)",
    "SLURM_STEP_NODELIST": "gpu[07-08]",
    "SLURM_PROCID": "5",
    "SLURM_LOCALID": "1",
    "SLURM_NODEID": "1",
}


@pytest.mark.parametrize(
    ("spec", "counts"),
    [("4", [4]), ("4(x2)", [4, 4]), ("4(x2),3", [4, 4, 3]), ("1,2(x1), 3", [1, 2, 3])],
)
def test_tasks_per_node_expands_slurms_repeats(spec: str, counts: list[int]) -> None:
    assert tasks_per_node(spec) == counts


@pytest.mark.parametrize("spec", ["", "4x2", "4(2)", "a"])
def test_a_bad_tasks_per_node_is_named(spec: str) -> None:
    text = re.escape(f"SLURM_STEP_TASKS_PER_NODE='{spec}': expected")
    with pytest.raises(ClusterError, match=f"^{text}"):
        tasks_per_node(spec)


@pytest.mark.parametrize(
    ("nodelist", "host"),
    [
        ("gpu[07-08,11]", "gpu07"),
        ("gpu[11,07-08]", "gpu11"),
        ("nid[001-004],cpu1", "nid001"),
        ("node-a-[3-5]", "node-a-3"),
        ("alpha,beta", "alpha"),
        ("127.0.0.1", "127.0.0.1"),
    ],
)
def test_first_host_of_a_host_list(nodelist: str, host: str) -> None:
    assert first_host(nodelist) == host


def test_a_task_of_a_two_node_step_gets_torchs_variables() -> None:
    assert slurm_torch_env(STEP) == {
        "RANK": "5",
        "WORLD_SIZE": "8",
        "LOCAL_RANK": "1",
        "LOCAL_WORLD_SIZE": "4",
        "MASTER_ADDR": "gpu07",
        "MASTER_PORT": str(20000 + 123456 % 10000),  # 23456
    }


def test_uneven_nodes_get_their_own_local_world() -> None:
    env = {**STEP, "SLURM_STEP_NUM_TASKS": "11", "SLURM_STEP_TASKS_PER_NODE": "4(x2),3",
           "SLURM_STEP_NODELIST": "gpu[07-08,11]", "SLURM_PROCID": "9", "SLURM_LOCALID": "1",
           "SLURM_NODEID": "2"}  # fmt: skip
    assert slurm_torch_env(env)["LOCAL_WORLD_SIZE"] == "3"


def test_set_addresses_and_torchrun_win() -> None:
    mapped = slurm_torch_env({**STEP, "MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "29400"})
    assert "MASTER_ADDR" not in mapped and "MASTER_PORT" not in mapped
    assert slurm_torch_env({**STEP, "RANK": "0"}) == {}  # srun torchrun: torchrun's variables


@pytest.mark.parametrize(
    "env",
    [
        {},  # no SLURM at all
        {k: v for k, v in STEP.items() if not k.startswith("SLURM_STEP_")},  # salloc shell
        {**STEP, "SLURM_STEP_NUM_TASKS": "1", "SLURM_STEP_TASKS_PER_NODE": "1"},  # batch step
    ],
)
def test_outside_a_multi_task_step_nothing_changes(env: dict[str, str]) -> None:
    assert slurm_torch_env(env) == {}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"SLURM_PROCID": "x"}, r"^SLURM_PROCID='x': expected a whole number"),
        ({"SLURM_NODEID": "2"}, r"^SLURM_NODEID=2 but SLURM_STEP_TASKS_PER_NODE='4\(x2\)' lists 2"),
        ({"SLURM_LOCALID": "4"}, r"^SLURM_PROCID=5 / SLURM_LOCALID=4 outside a step of 8 tasks"),
        ({"SLURM_STEP_NODELIST": "[1-2]"}, r"^SLURM_STEP_NODELIST='\[1-2\]': no host name"),
    ],
)
def test_inconsistent_slurm_variables_are_named(change: dict[str, str], message: str) -> None:
    with pytest.raises(ClusterError, match=message):
        slurm_torch_env({**STEP, **change})


def test_adopting_exports_the_variables() -> None:
    env = dict(STEP)
    set_now = adopt_slurm_step(env)
    assert env == {**STEP, **set_now} and env["RANK"] == "5"
    assert adopt_slurm_step(env) == {}  # RANK is set now: a second call changes nothing


@pytest.mark.parametrize(
    ("local_rank", "local_world", "visible", "index"),
    [
        (0, 1, 1, 0),
        (3, 4, 4, 3),  # every process sees the node's GPUs: its LOCAL_RANK
        (3, 4, 1, 0),  # srun --gpus-per-task=1: each sees its own, as device 0
        (1, 2, 8, 1),
    ],
)
def test_each_local_process_takes_its_gpu(
    local_rank: int, local_world: int, visible: int, index: int
) -> None:
    assert cuda_index(local_rank, local_world, visible) == index


def test_more_processes_than_gpus_is_refused() -> None:
    with pytest.raises(RuntimeError, match=r"^LOCAL_RANK=3 of 4 processes on this machine, but"):
        cuda_index(3, 4, 2)


def test_threads_split_among_the_processes_sharing_cpus() -> None:
    mapped = {**STEP, **slurm_torch_env(STEP), "SLURM_CPUS_PER_TASK": "8"}
    assert cpu_sharers(4, 8, mapped) == 1  # srun bound the task to its own 8 CPUs
    assert cpu_sharers(4, 32, mapped) == 4  # --cpu-bind=none: the node's 32, split 4 ways
    assert cpu_sharers(4, 8, {k: v for k, v in mapped.items() if k != "SLURM_CPUS_PER_TASK"}) == 4
    # srun torchrun: one task per node (the step has 2), torchrun's 4 processes share its CPUs
    torchrun = {**STEP, "SLURM_STEP_NUM_TASKS": "2", "SLURM_CPUS_PER_TASK": "32",
                "RANK": "5", "WORLD_SIZE": "8", "LOCAL_WORLD_SIZE": "4"}  # fmt: skip
    assert cpu_sharers(4, 32, torchrun) == 4
    assert cpu_sharers(2, 2, {}) == 2  # no SLURM: torchrun's local processes
