"""Exact resume of a training stage: SIGKILLed mid-run and rerun, it writes what an uninterrupted
run writes; a damaged resume checkpoint is an error naming the file, never overwritten."""

from __future__ import annotations

import copy
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from support.params import tiny_params
from support.project import build
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.training.checkpoints import (
    ResumeError,
    load_resume,
    resume_path,
    save_checkpoint,
    save_resume,
)

ROOT = Path(__file__).resolve().parents[2]
# 3 epochs of 10 steps, a resume state every 12: the first one is taken after epoch 0's
# evaluation (the best snapshot it holds then went through a save and a load), and leaves 18
# steps and two evaluations to kill in.
EPOCHS, ITERS, EVERY = 3, 10, 12


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny params with a longer train stage, its data, split and warmup."""
    work = tmp_path_factory.mktemp("resume")
    raw = tiny_params()
    raw["train"].update(epochs=EPOCHS, iters_per_epoch=ITERS)
    raw["runtime"]["checkpoint_every"] = EVERY
    return build(work, ["download", "split", "warmup"], raw)


def train_cmd(name: str, *extra: str) -> list[str]:
    outputs = {
        "--out": f"models/{name}.pt",
        "--metrics": f"metrics/{name}.json",
        "--history": f"metrics/{name}_history.csv",
        "--hardness": f"metrics/{name}_hardness.csv",
    }
    args = [arg for pair in outputs.items() for arg in pair]
    return [sys.executable, "-m", "pipeline.cli", "train", *args, *extra]


def env(work: Path) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),  # this checkout, whatever the venv has installed
        "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}",
        "OMP_WAIT_POLICY": "PASSIVE",
    }


def outputs(work: Path, name: str) -> dict[str, bytes]:
    files = [f"models/{name}.pt", f"metrics/{name}.json", f"metrics/{name}_history.csv"]
    files.append(f"metrics/{name}_hardness.csv")
    return {Path(f).name.replace(name, "<name>"): (work / f).read_bytes() for f in files}


def test_sigkill_mid_training_then_rerun_gives_the_uninterrupted_outputs(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The reference: one uninterrupted run that never writes a resume checkpoint (in process,
    # to spare an interpreter start; the comparison also shows process state does not leak in).
    monkeypatch.chdir(workdir)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{workdir / 'mlflow.db'}")
    ref_args = train_cmd("ref", "--set", "runtime.checkpoint_every=0")[3:]
    ref = CliRunner().invoke(app, ref_args, catch_exceptions=False)
    assert ref.exit_code == 0, ref.output
    assert not resume_path(workdir / "models/ref.pt").exists()

    state_file = resume_path(workdir / "models/killed.pt")
    proc = subprocess.Popen(
        train_cmd("killed"),
        cwd=workdir,
        env=env(workdir),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while not state_file.exists():
        assert proc.poll() is None, "the run ended before its first resume checkpoint"
        assert time.monotonic() < deadline, "no resume checkpoint within 120 s"
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (workdir / "models/killed.pt").exists(), "the run finished before the kill"
    state = torch.load(state_file, map_location="cpu", weights_only=True)["state"]
    # What a kill during a save leaves beside the good file; the rerun must clean it up.
    (state_file.parent / f".{state_file.name}.killed.tmp").write_bytes(b"half a checkpoint")
    assert state["step"] == EVERY
    # Killed after an evaluation: the state carries a best snapshot that the rerun restores.
    assert len(state["history"]) == 1 and state["best_epoch"] == 0

    rerun = subprocess.run(
        train_cmd("killed"), cwd=workdir, env=env(workdir), capture_output=True, text=True
    )
    assert rerun.returncode == 0, rerun.stderr
    assert f"resuming from models/killed.resume.pt at iteration {state['step']}" in rerun.stderr
    assert not state_file.exists()  # removed once every output is written
    assert not list(state_file.parent.glob(f".{state_file.name}.*.tmp"))  # nor a temporary

    a = torch.load(workdir / "models/ref.pt", map_location="cpu", weights_only=True)
    b = torch.load(workdir / "models/killed.pt", map_location="cpu", weights_only=True)
    for kind in ("best", "last"):
        for who in ("student", "teacher"):
            for key, tensor in a[kind][who].items():
                assert torch.equal(tensor, b[kind][who][key]), (kind, who, key)
    # Byte for byte: the checkpoint, the metrics, the history and the hardness CSV.
    assert outputs(workdir, "ref") == outputs(workdir, "killed")


def test_a_truncated_resume_checkpoint_is_an_error_naming_it(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = workdir / "models/broken.pt"
    state_file = resume_path(out)
    save_checkpoint(state_file, {"run": "x", "state": {"step": torch.arange(1000)}})
    damaged = state_file.read_bytes()[:-300]
    state_file.write_bytes(damaged)
    monkeypatch.chdir(workdir)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{workdir / 'mlflow.db'}")
    with pytest.raises(ResumeError, match=rf"{state_file}.*unreadable.*delete it"):
        CliRunner().invoke(app, ["train", "--out", str(out)], catch_exceptions=False)
    assert state_file.read_bytes() == damaged  # left for the user to inspect, not replaced
    assert not out.exists()

    state_file.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ResumeError, match=str(state_file)):
        load_resume(state_file, "x")
    save_checkpoint(state_file, {"weights": torch.zeros(2)})
    with pytest.raises(ResumeError, match=rf"{state_file} is not a resume checkpoint"):
        load_resume(state_file, "x")


def test_a_failed_write_never_replaces_a_good_resume_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "run.resume.pt"
    save_resume(path, "run-a", {"step": 4, "weights": torch.ones(3)})
    good = path.read_bytes()
    with pytest.raises(Exception):  # noqa: B017 — whatever pickling raises
        save_resume(path, "run-a", {"step": 8, "hook": lambda: None})
    assert path.read_bytes() == good
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary left behind
    assert load_resume(path, "run-a")["step"] == 4
    assert load_resume(path, "run-b") is None  # another run's state: start over
    assert load_resume(tmp_path / "missing.pt", "run-a") is None


def test_equal_payloads_built_differently_save_to_equal_bytes(tmp_path: Path) -> None:
    # A state dict read back from a file has its own key strings; an uninterrupted run's has the
    # interpreter's. pickle writes a repeated object as a back-reference, so without
    # canonicalising the two checkpoints differed in bytes while every value was equal.
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.BatchNorm2d(4))
    save_checkpoint(tmp_path / "first.pt", {"best": {"student": model.state_dict()}})
    reread = torch.load(tmp_path / "first.pt", weights_only=True)["best"]
    # Snapshots are copies (as fit's are): tensors shared between them would pickle once.
    fresh = {"best": {"student": copy.deepcopy(model.state_dict())}}
    fresh["last"] = {"student": copy.deepcopy(model.state_dict())}
    restored = {"best": reread, "last": {"student": copy.deepcopy(model.state_dict())}}
    save_checkpoint(tmp_path / "fresh.pt", fresh)
    save_checkpoint(tmp_path / "restored.pt", restored)
    assert (tmp_path / "fresh.pt").read_bytes() == (tmp_path / "restored.pt").read_bytes()
    # The module versions a state dict carries survive the round trip.
    again = torch.load(tmp_path / "restored.pt", weights_only=True)["last"]["student"]
    assert again._metadata == model.state_dict()._metadata
