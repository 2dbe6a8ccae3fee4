"""Training on several machines, played on this one with gloo on 127.0.0.1. Each "node" has its
own copy of the project (data, split, warmup checkpoint, MLflow store), as machines without a
shared file system would:

* two torchrun launchers, `--nnodes=2 --nproc-per-node=1 --node-rank=0/1`;
* two processes as the tasks of a 2-node `srun` step (SLURM_* variables, no torchrun);

each train the tiny iMAS model and write, on node 0 alone, byte for byte what a 2-process
single-node torchrun writes. Node 1 writes nothing and logs no MLflow run. Also: a resume
checkpoint that only rank 0's machine holds reaches every rank.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch.distributed as dist
from support.ddp_worker import free_port, spawn
from support.params import tiny_params
from support.project import build

from imas import distributed
from pipeline.training.checkpoints import ResumeError, save_resume
from pipeline.training.runner import shared_resume

ROOT = Path(__file__).resolve().parents[2]
OUTPUTS = ("model.pt", "metrics.json", "history.csv", "hardness.csv")
TIMEOUT = 1200  # seconds for each launch to end; a hung rendezvous fails the test, never CI
TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]
LAUNCH_VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK", "MASTER")


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny iMAS training, a total batch of 4 + 4 (2 + 2 per process), and its warmup."""
    raw = tiny_params()
    for section in ("warmup", "train"):
        raw[section].update(batch_labeled=4, batch_unlabeled=4, epochs=2)
    return build(tmp_path_factory.mktemp("project"), ["download", "split", "warmup"], raw)


def node(project: Path, folder: Path) -> Path:
    """A machine's copy of the project."""
    shutil.copytree(project, folder)
    return folder


def train_command(tag: str) -> list[str]:
    outputs = [f"{tag}/{name}" for name in OUTPUTS]
    return ["-m", "pipeline.cli", "train", "--out", outputs[0], "--metrics", outputs[1],
            "--history", outputs[2], "--hardness", outputs[3]]  # fmt: skip


def clean_env(work: Path, **extra: str) -> dict[str, str]:
    """This process's environment without any launcher's variables, and the node's store."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SLURM_", *LAUNCH_VARS)) and k not in ("OMP_NUM_THREADS",)
    }
    env.update(
        PYTHONPATH=str(ROOT),
        MLFLOW_TRACKING_URI=f"sqlite:///{work / 'mlflow.db'}",
        OMP_WAIT_POLICY="PASSIVE",
        OMP_NUM_THREADS="1",
        **extra,
    )
    return env


def launch(jobs: list[tuple[list[str], Path, dict[str, str]]], logs: Path) -> list[tuple[int, str]]:
    """Start every (command, cwd, env) at once, wait for all (TIMEOUT in total); returns each
    one's exit code and output (kept in `logs`). Each runs in a session of its own, killed with
    its children if anything goes wrong."""
    logs.mkdir(parents=True, exist_ok=True)
    procs: list[subprocess.Popen] = []
    try:
        for i, (cmd, cwd, env) in enumerate(jobs):
            with (logs / f"{i}.log").open("w") as log:
                procs.append(
                    subprocess.Popen(
                        cmd,
                        cwd=cwd,
                        env=env,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )
        for proc in procs:
            proc.wait(timeout=TIMEOUT)
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    return [(p.returncode, (logs / f"{i}.log").read_text()) for i, p in enumerate(procs)]


def written(folder: Path) -> dict[str, bytes]:
    return {name: (folder / name).read_bytes() for name in OUTPUTS}


def finished_runs(work: Path) -> list[str]:
    """Statuses of the training runs in a node's store (the copied project holds only the
    warmup's run)."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{work / 'mlflow.db'}")
    exp = client.get_experiment_by_name("imas-embedded")
    runs = client.search_runs([exp.experiment_id]) if exp is not None else []
    return sorted(r.info.status for r in runs if r.info.run_name.startswith("train-"))


@pytest.fixture(scope="module")
def single_node(project: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """What 2 processes on one machine write."""
    work = node(project, tmp_path_factory.mktemp("single") / "node")
    cmd = [*TORCHRUN, "--standalone", "--nnodes=1", "--nproc-per-node=2", *train_command("one")]
    [(code, out)] = launch([(cmd, work, clean_env(work))], work.parent / "logs")
    assert code == 0, out[-3000:]
    return written(work / "one")


def test_two_torchrun_nodes_write_what_one_node_writes(
    project: Path, single_node: dict[str, bytes], tmp_path: Path
) -> None:
    nodes = [node(project, tmp_path / f"node{i}") for i in range(2)]
    port = free_port()
    jobs = []
    for i, work in enumerate(nodes):
        rendezvous = ["--master-addr=127.0.0.1", f"--master-port={port}"]
        cmd = [*TORCHRUN, "--nnodes=2", "--nproc-per-node=1", f"--node-rank={i}", *rendezvous]
        cmd += train_command("two")
        jobs.append((cmd, work, clean_env(work)))
    results = launch(jobs, tmp_path / "logs")
    for i, (code, out) in enumerate(results):
        assert code == 0, f"node {i}: {out[-3000:]}"
    assert written(nodes[0] / "two") == single_node
    assert not (nodes[1] / "two").exists()  # rank 1 writes nothing on its machine
    assert finished_runs(nodes[0]) == ["FINISHED"]  # one training run, on rank 0's store
    assert finished_runs(nodes[1]) == []
    assert [out.count("train: best teacher val mIoU") for _, out in results] == [1, 0]


def test_two_srun_tasks_write_what_one_node_writes(
    project: Path, single_node: dict[str, bytes], tmp_path: Path
) -> None:
    nodes = [node(project, tmp_path / f"node{i}") for i in range(2)]
    step = {
        "SLURM_JOB_ID": "4242",
        "SLURM_STEP_NUM_TASKS": "2",
        "SLURM_STEP_TASKS_PER_NODE": "1(x2)",
        "SLURM_STEP_NODELIST": "127.0.0.1",  # a host list whose first host is this machine
        "SLURM_LOCALID": "0",
        "MASTER_PORT": str(free_port()),  # a free port rather than 20000 + job id mod 10000
    }
    jobs = [
        (
            [sys.executable, *train_command("srun")],
            work,
            clean_env(work, **step, SLURM_PROCID=str(i), SLURM_NODEID=str(i)),
        )
        for i, work in enumerate(nodes)
    ]
    results = launch(jobs, tmp_path / "logs")
    for i, (code, out) in enumerate(results):
        assert code == 0, f"task {i}: {out[-3000:]}"
    assert written(nodes[0] / "srun") == single_node
    assert not (nodes[1] / "srun").exists()
    assert (finished_runs(nodes[0]), finished_runs(nodes[1])) == (["FINISHED"], [])


def resume_worker(rank: int, world: int, port: int, folder: str) -> None:
    """Rank 0's machine holds the resume file, rank 1's an empty folder."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        mine = Path(folder) / f"machine{rank}" / "model.resume.pt"
        mine.parent.mkdir(parents=True, exist_ok=True)
        if rank == 0:
            save_resume(mine, "run-a", {"step": 7, "ranks": [{"seed": 1}, {"seed": 2}]})
        assert shared_resume(mine, "run-a") == {"step": 7, "ranks": [{"seed": 1}, {"seed": 2}]}
        assert shared_resume(mine, "run-b") is None  # another run's file: start over, together
        dist.barrier()
        if rank == 0:
            mine.write_bytes(b"truncated")
        try:
            shared_resume(mine, "run-a")
        except ResumeError as err:  # every rank stops, none waits for the others
            assert f"resume checkpoint {mine.parent.parent / 'machine0'}" in str(err), err
        else:
            raise AssertionError(f"rank {rank}: an unreadable resume file was not refused")
        assert distributed.rank() == rank
    finally:
        dist.destroy_process_group()


def test_a_resume_file_on_rank_0s_machine_reaches_every_rank(tmp_path: Path) -> None:
    spawn(resume_worker, 2, str(tmp_path))
