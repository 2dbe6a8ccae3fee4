"""Torch threads per stage among parallel queue jobs, and what a stage learns from DVC."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pipeline.config.params import ParamsError, load_params
from pipeline.control import threads
from pipeline.control.dvc_context import project_root, queue_workers
from pipeline.control.threads import applied, apply_threads, parallel_jobs, threads_per_job

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def no_dvc_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DVC_ROOT", "DVC_EXP_NAME", "IMAS_JOBS"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize(
    ("setting", "cpus", "jobs", "expected"),
    [
        ("auto", 2, 1, 2),
        ("auto", 2, 2, 1),
        ("auto", 8, 3, 2),
        ("auto", 1, 4, 1),  # never 0
        (2, 2, 1, 2),  # alone: exactly as set, as before
        (8, 2, 1, 8),
        (2, 2, 2, 1),  # the default in a `-j 2` queue on 2 cores: no oversubscription
        (2, 16, 2, 2),  # room enough: as set
        (4, 8, 2, 4),
    ],
)
def test_threads_per_job(setting, cpus: int, jobs: int, expected: int) -> None:
    assert threads_per_job(setting, cpus, jobs) == expected


def test_runtime_threads_takes_a_count_or_auto(tmp_path: Path) -> None:
    assert load_params(REPO / "params.yaml", ["runtime.threads=auto"]).runtime.threads == "auto"
    assert load_params(REPO / "params.yaml", ["runtime.threads=3"]).runtime.threads == 3
    for bad in ("0", "many"):
        with pytest.raises(ParamsError, match=r"runtime\.threads"):
            load_params(REPO / "params.yaml", [f"runtime.threads={bad}"])


def worker_record(project: Path, n: int, pid: int, returncode: int | None) -> None:
    folder = project / ".dvc/tmp/exps/celery"
    folder.mkdir(parents=True, exist_ok=True)
    info = {"pid": pid, "stdin": None, "stdout": None, "stderr": None, "returncode": returncode}
    (folder / f"dvc-exp-worker-{n}.json").write_text(json.dumps(info))


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def clone_in(project: Path) -> Path:
    """A queued experiment's temporary workspace as DVC lays it out, with its own `.dvc`."""
    clone = project / ".dvc/tmp/exps/tmpabc123"
    (clone / ".dvc").mkdir(parents=True)
    return clone


def test_queue_workers_counts_the_live_ones(tmp_path: Path) -> None:
    (tmp_path / ".dvc").mkdir()
    assert queue_workers(tmp_path) == 0
    worker_record(tmp_path, 1, os.getpid(), None)  # running
    worker_record(tmp_path, 2, os.getppid(), None)  # running
    worker_record(tmp_path, 3, os.getpid(), 0)  # exited (DVC wrote its return code)
    worker_record(tmp_path, 4, dead_pid(), None)  # killed before DVC could write one
    (tmp_path / ".dvc/tmp/exps/celery/dvc-exp-worker-5.json").write_text("{")  # mid-write
    assert queue_workers(tmp_path) == 2


def test_parallel_jobs_in_a_queued_experiment(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / ".dvc").mkdir()
    clone = clone_in(tmp_path)
    monkeypatch.chdir(clone)
    assert parallel_jobs() == 1  # no workers: a plain run
    worker_record(tmp_path, 1, os.getpid(), None)
    worker_record(tmp_path, 2, os.getppid(), None)
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    monkeypatch.setenv("DVC_EXP_NAME", "peaky-bawl")
    assert parallel_jobs() == 2  # the workers of the project that queued it, not the clone's
    monkeypatch.setenv("IMAS_JOBS", "3")
    assert parallel_jobs() == 3  # an explicit count wins
    for bad in ("0", "two"):
        monkeypatch.setenv("IMAS_JOBS", bad)
        with pytest.raises(ValueError, match="IMAS_JOBS"):
            parallel_jobs()


def test_apply_threads_sets_torch_and_records_the_plan(tmp_path: Path, monkeypatch) -> None:
    before = torch.get_num_threads()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(threads, "cpu_count", lambda: 4)
    monkeypatch.setattr(threads, "_applied", None)
    try:
        monkeypatch.setenv("IMAS_JOBS", "2")
        plan = apply_threads("auto")
        assert plan.threads == torch.get_num_threads() == 2 and plan.jobs == 2
        assert applied() == plan
        monkeypatch.setenv("IMAS_JOBS", "1")
        assert apply_threads(3).threads == torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)


def test_project_root_of_an_experiment_clone_is_the_project_that_queued_it(
    tmp_path: Path, monkeypatch
) -> None:
    (tmp_path / ".dvc").mkdir()
    clone = clone_in(tmp_path)
    (clone / "benchmarks/ssl").mkdir(parents=True)
    # Run by hand in the clone: DVC's layout alone says whose it is.
    assert project_root(clone / "benchmarks/ssl") == tmp_path
    # As DVC runs it: DVC_ROOT names the project.
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    monkeypatch.setenv("DVC_EXP_NAME", "peaky-bawl")
    assert project_root(clone) == tmp_path
    # `dvc exp run` in the workspace: DVC_ROOT is the project itself.
    (tmp_path / "sub").mkdir()
    assert project_root(tmp_path / "sub") == tmp_path


def test_a_stray_dvc_root_does_not_move_an_ordinary_project(tmp_path: Path, monkeypatch) -> None:
    other, mine = tmp_path / "other", tmp_path / "mine"
    for project in (other, mine):
        (project / ".dvc").mkdir(parents=True)
    monkeypatch.setenv("DVC_ROOT", str(other))
    monkeypatch.setenv("DVC_EXP_NAME", "left-over")
    assert project_root(mine) == mine
    plain = tmp_path / "plain"
    plain.mkdir()
    assert project_root(plain) == plain
