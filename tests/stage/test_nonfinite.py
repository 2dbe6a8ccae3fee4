"""A NaN or Inf loss stops training before its update, naming the iteration and every loss
component; the last good resume checkpoint stays, and no checkpoint with NaN is ever written."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import torch
from mlflow import MlflowClient
from support.project import build
from support.training import MODEL, config, run_fit
from typer.testing import CliRunner

import imas.train
import pipeline.training.runner
from imas.finite import NonFiniteError, nonfinite_keys
from imas.model import build_model
from pipeline.cli import app
from pipeline.training.checkpoints import load_resume, resume_path, save_checkpoint, save_resume


def poison_after(model: torch.nn.Module, good_forwards: int) -> torch.nn.Module:
    """Make `model` return NaN from its (good_forwards + 1)-th forward with gradients on, i.e.
    the student's training forward of iteration `good_forwards` (teacher and the student's
    pseudo-label pass run without gradients and are not counted)."""
    seen = [0]

    def hook(_module, _inputs, output):
        if not torch.is_grad_enabled():
            return output
        seen[0] += 1
        return output * float("nan") if seen[0] > good_forwards else output

    model.register_forward_hook(hook)
    return model


def test_a_nan_from_the_model_stops_fit_before_the_update() -> None:
    cfg = config("supervised")  # 2 epochs of 3 iterations
    states: list[dict[str, Any]] = []
    with pytest.MonkeyPatch.context() as mp:  # run_fit builds its model through this name
        mp.setattr("support.training.build_model", lambda cfg: poison_after(build_model(cfg), 4))
        with pytest.raises(NonFiniteError) as err:
            run_fit(
                cfg, checkpoint_every=1, on_checkpoint=lambda s: states.append(copy.deepcopy(s))
            )
    message = str(err.value)
    assert "non-finite loss at iteration 4 (epoch 1): loss=nan, loss_x=nan" in message
    # States were handed out at the top of iterations 1..4, all finite; none after the NaN.
    assert [s["step"] for s in states] == [1, 2, 3, 4]
    assert all(nonfinite_keys(s) == [] for s in states)


def test_an_infinite_unsupervised_loss_names_each_component(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = [0]
    real = imas.train.unsupervised_loss

    def blows_up(*args, **kwargs):
        calls[0] += 1
        loss = real(*args, **kwargs)
        return loss + float("inf") if calls[0] >= 3 else loss

    monkeypatch.setattr(imas.train, "unsupervised_loss", blows_up)
    with pytest.raises(NonFiniteError) as err:
        run_fit(config("imas", cutmix=False))  # one unsupervised loss per iteration
    message = str(err.value)
    assert "non-finite loss at iteration 2 (epoch 0): loss=inf, loss_x=" in message
    loss_x = float(message.split("loss_x=")[1].split(",")[0])
    assert loss_x == loss_x and abs(loss_x) != float("inf")  # the finite part is shown too
    assert "loss_u=inf" in message


def test_a_nan_checkpoint_never_replaces_a_good_one(tmp_path: Path) -> None:
    path = tmp_path / "run.resume.pt"
    good = {"student": build_model(MODEL).state_dict(), "best_miou": float("-inf")}
    save_resume(path, "run", good)  # -inf as a plain float (no eval yet) is fine
    before = path.read_bytes()
    bad = copy.deepcopy(good)
    bad["student"]["classifier.weight"] = bad["student"]["classifier.weight"] * float("nan")
    with pytest.raises(NonFiniteError, match=r"run\.resume\.pt: not written.*classifier\.weight"):
        save_resume(path, "run", bad)
    with pytest.raises(NonFiniteError, match=r"best\.pt: not written.*best\.student"):
        save_checkpoint(tmp_path / "best.pt", {"best": {"student": bad["student"]}})
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # no temporary left
    assert nonfinite_keys({"a": [torch.ones(2), torch.tensor([1.0, float("inf")])]}) == ["a.1"]
    assert nonfinite_keys({"steps": torch.arange(3), "x": float("nan")}) == []


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build(tmp_path_factory.mktemp("nan"), ["download", "split"])


def test_the_warmup_stage_stops_on_nan_and_keeps_its_last_resume_checkpoint(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(project)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{project / 'mlflow.db'}")
    monkeypatch.setattr(
        pipeline.training.runner, "build_model", lambda cfg: poison_after(build_model(cfg), 5)
    )
    sets = ["warmup.epochs=2", "warmup.iters_per_epoch=4", "runtime.checkpoint_every=2"]
    args = ["warmup", "--out", "models/nan.pt", "--metrics", "metrics/nan.json"]
    args += ["--history", "metrics/nan.csv", *(a for s in sets for a in ("--set", s))]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1, result.output
    assert (
        "error: warmup: non-finite loss at iteration 5 (epoch 1): loss=nan, loss_x=nan; training "
        "stopped before this update; the last good resume checkpoint models/nan.resume.pt is kept"
    ) in result.output
    # The checkpoint of iteration 4 (the last multiple of 2 before the NaN), finite throughout.
    payload = torch.load(resume_path("models/nan.pt"), map_location="cpu", weights_only=True)
    assert payload["state"]["step"] == 4 and nonfinite_keys(payload) == []
    assert load_resume(resume_path("models/nan.pt"), payload["run"]) is not None
    assert not any(
        Path(p).exists() for p in ("models/nan.pt", "metrics/nan.json", "metrics/nan.csv")
    )
    client = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    [run] = client.search_runs(
        [client.get_experiment_by_name("imas-embedded").experiment_id],
        filter_string="attributes.run_name = 'warmup-supervised-4-s0'",
    )
    assert run.info.status == "FAILED"
