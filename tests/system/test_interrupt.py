"""SIGINT/SIGTERM during training: a resume checkpoint, exit code 128 + signal, the MLflow run
KILLED, no output; the rerun resumes and writes what an uninterrupted run writes. And no stage
leaves its MLflow run RUNNING: an exception marks it FAILED, Ctrl-C or SIGTERM KILLED."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from mlflow import MlflowClient
from support.params import tiny_params
from support.project import build
from support.training import assert_same_result, config, run_fit
from typer.testing import CliRunner

from imas.train import Interrupted
from pipeline.cli import app
from pipeline.config.params import load_params
from pipeline.control.tracking import Terminated, stage_run
from pipeline.training.checkpoints import resume_path

ROOT = Path(__file__).resolve().parents[2]
ITERS = 60  # 2 epochs: 120 iterations, about 4 s, so a signal lands mid-training


def test_fit_stops_when_asked_and_its_state_finishes_the_run() -> None:
    torch.use_deterministic_algorithms(True)
    cfg = config("imas")  # 2 epochs of 3 iterations
    uninterrupted, _ = run_fit(cfg)
    saved: list[dict[str, Any]] = []
    asked = [0]

    def should_stop() -> bool:
        asked[0] += 1
        return asked[0] == 5  # at the top of iteration 4 (0-based)

    with pytest.raises(Interrupted) as stop:
        run_fit(cfg, should_stop=should_stop, on_checkpoint=saved.append)
    assert stop.value.step == 4 and [s["step"] for s in saved] == [4]
    assert isinstance(stop.value, KeyboardInterrupt)  # no `except Exception` swallows it
    resumed, _ = run_fit(cfg, resume_state=saved[0])
    assert_same_result(resumed, uninterrupted)
    # Asked before the first iteration: nothing to save (a state at step 0 resumes nothing).
    saved.clear()
    with pytest.raises(Interrupted) as stop:
        run_fit(cfg, should_stop=lambda: True, on_checkpoint=saved.append)
    assert stop.value.step == 0 and saved == []


def test_under_ddp_a_stop_or_a_nan_on_one_rank_stops_every_rank_together() -> None:
    from support.ddp_stop_worker import spawn_within, stop_worker

    spawn_within(stop_worker, 2, seconds=60)


@pytest.fixture
def client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> MlflowClient:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return MlflowClient(tracking_uri=uri)


def statuses(client: MlflowClient, experiment: str) -> dict[str, str]:
    exp = client.get_experiment_by_name(experiment)
    return {r.data.tags["stage"]: r.info.status for r in client.search_runs([exp.experiment_id])}


def test_no_stage_leaves_its_run_running(client: MlflowClient) -> None:
    params = load_params(ROOT / "params.yaml")
    with pytest.raises(ValueError), stage_run("crashed", params, "x"):
        raise ValueError("boom")
    with pytest.raises(KeyboardInterrupt), stage_run("ctrl-c", params, "x"):
        raise KeyboardInterrupt
    # SIGTERM's default ends the process where it stands; inside a run it unwinds instead.
    with pytest.raises(Terminated), stage_run("sigterm", params, "x"):
        # Checked first, or this test's own process would be the one ended.
        handler = signal.getsignal(signal.SIGTERM)
        assert handler is not signal.SIG_DFL, "SIGTERM would end the stage with its run RUNNING"
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler raises first
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # restored afterwards
    with stage_run("done", params, "x"):
        pass
    # The root params: the garment scenes, so runs go to the experiment imas-garments.
    assert statuses(client, "imas-garments") == {
        "crashed": "FAILED",
        "ctrl-c": "KILLED",
        "sigterm": "KILLED",
        "done": "FINISHED",
    }


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("interrupt")
    raw = tiny_params()
    raw["train"].update(epochs=2, iters_per_epoch=ITERS)
    return build(work, ["download", "split", "warmup"], raw)


def outputs(name: str) -> list[str]:
    return [f"models/{name}.pt", f"metrics/{name}.json", f"metrics/{name}_history.csv"]


def train_args(name: str) -> list[str]:
    out, metrics, history = outputs(name)
    return ["train", "--out", out, "--metrics", metrics, "--history", history]


class Output:
    """A pipe read on a thread, so the test can watch the progress bar while the stage runs."""

    def __init__(self, stream) -> None:
        self.text = ""
        self.thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self.thread.start()

    def _read(self, stream) -> None:
        for chunk in iter(lambda: stream.read1(4096), b""):
            self.text += chunk.decode(errors="replace")

    def steps_done(self) -> int:
        done = re.findall(rf"\b(\d+)/{2 * ITERS}\b", self.text)
        return int(done[-1]) if done else 0


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_mid_training_saves_a_resume_checkpoint_and_kills_the_run(
    project: Path, sig: signal.Signals, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = f"stopped-{sig.name}"
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),  # this checkout, whatever the venv has installed
        "MLFLOW_TRACKING_URI": f"sqlite:///{project / 'mlflow.db'}",
        "OMP_WAIT_POLICY": "PASSIVE",
    }
    # runtime.checkpoint_every stays 0: the signal alone must produce the resume checkpoint.
    cmd = [sys.executable, "-m", "pipeline.cli", *train_args(name)]
    cmd += ["--set", "runtime.progress=true"]  # the bar tells when iterations are under way
    proc = subprocess.Popen(cmd, cwd=project, env=env, stderr=subprocess.PIPE)
    err = Output(proc.stderr)
    deadline = time.monotonic() + 120
    while err.steps_done() < 1:
        assert proc.poll() is None, f"the stage ended before training:\n{err.text}"
        assert time.monotonic() < deadline, f"no training step within 120 s:\n{err.text}"
        time.sleep(0.02)
    proc.send_signal(sig)
    assert proc.wait(timeout=60) == 128 + sig, err.text
    err.thread.join(timeout=10)

    state_file = resume_path(project / f"models/{name}.pt")
    found = re.search(
        rf"train: stopped by {sig.name} at iteration (\d+); resume checkpoint ", err.text
    )
    assert found, err.text
    step = int(found.group(1))
    assert f"models/{name}.resume.pt written; rerun the stage to continue" in err.text
    assert "Traceback" not in err.text
    assert 1 <= step < 2 * ITERS
    assert torch.load(state_file, weights_only=True)["state"]["step"] == step
    # Nothing for DVC to cache: no output and no temporary beside one.
    assert not [p for p in outputs(name) if (project / p).exists()]
    assert not list(project.rglob("*.tmp"))

    client = MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
    exp = client.get_experiment_by_name("imas-embedded")
    runs = client.search_runs(
        [exp.experiment_id], "tags.stage = 'train'", order_by=["attributes.start_time DESC"]
    )
    assert runs[0].info.status == "KILLED"

    # The rerun picks the state up and writes exactly what an uninterrupted run writes.
    monkeypatch.chdir(project)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", env["MLFLOW_TRACKING_URI"])
    rerun = CliRunner().invoke(app, train_args(name), catch_exceptions=False)
    assert rerun.exit_code == 0, rerun.output
    assert f"resuming from models/{name}.resume.pt at iteration {step}" in rerun.output
    assert not state_file.exists()
    if sig == signal.SIGTERM:  # one byte comparison is enough; SIGINT's state is the same kind
        reference = CliRunner().invoke(app, train_args("reference"), catch_exceptions=False)
        assert reference.exit_code == 0, reference.output
        for ours, theirs in zip(outputs(name), outputs("reference"), strict=True):
            assert (project / ours).read_bytes() == (project / theirs).read_bytes(), ours


@pytest.mark.parametrize("ctrl_c", [False, True], ids=["SIGTERM to imas", "Ctrl-C to the group"])
def test_a_stage_relaunched_under_torchrun_stops_every_rank_with_a_checkpoint(
    project: Path, ctrl_c: bool
) -> None:
    """`runtime.nproc: 2`: the `imas` process reruns itself under torchrun. SIGTERM to it (what
    a scheduler sends) reaches the workers through torchrun; Ctrl-C reaches the `imas` process
    (torchrun runs in a session of its own), which passes it on as SIGTERM. Either way the
    workers stop together on torchrun's SIGTERM, rank 0 writes the resume checkpoint, and the
    command exits 128 + the signal it got, with the run KILLED."""
    sig = signal.SIGINT if ctrl_c else signal.SIGTERM
    name = f"stopped-ddp-{sig.name}"
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "MLFLOW_TRACKING_URI": f"sqlite:///{project / 'mlflow.db'}",
        "OMP_WAIT_POLICY": "PASSIVE",
    }
    sets = ["runtime.nproc=2", "runtime.progress=true"]
    sets += ["train.batch_labeled=4", "train.batch_unlabeled=4"]  # 2 + 2 on each rank
    cmd = [sys.executable, "-m", "pipeline.cli", *train_args(name)]
    cmd += [a for s in sets for a in ("--set", s)]
    # Its own session, so the process group is the stage's alone, as a terminal's would be.
    proc = subprocess.Popen(
        cmd, cwd=project, env=env, stderr=subprocess.PIPE, start_new_session=True
    )
    err = Output(proc.stderr)
    deadline = time.monotonic() + 180
    while err.steps_done() < 1:
        assert proc.poll() is None, f"the stage ended before training:\n{err.text}"
        assert time.monotonic() < deadline, f"no training step within 180 s:\n{err.text}"
        time.sleep(0.05)
    if ctrl_c:
        os.killpg(proc.pid, signal.SIGINT)
    else:
        proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 128 + sig, err.text[-3000:]
    err.thread.join(timeout=10)
    found = re.search(r"train: stopped by SIGTERM at iteration (\d+); resume checkpoint", err.text)
    assert found, err.text[-3000:]
    state = torch.load(resume_path(project / f"models/{name}.pt"), weights_only=True)["state"]
    assert state["step"] == int(found.group(1)) >= 1 and state["world_size"] == 2
    assert not [p for p in outputs(name) if (project / p).exists()]
    client = MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
    exp = client.get_experiment_by_name("imas-embedded")
    runs = client.search_runs(
        [exp.experiment_id], "tags.stage = 'train'", order_by=["attributes.start_time DESC"]
    )
    assert runs[0].info.status == "KILLED" and runs[0].data.params["runtime.nproc"] == "2"
