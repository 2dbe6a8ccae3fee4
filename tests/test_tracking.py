"""Where the default MLflow store lives, and which experiment a stage's run goes to."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.params import load_params
from pipeline.tracking import stage_run, store_root, tracking_uri

REPO = Path(__file__).resolve().parents[1]


def test_store_root_is_the_enclosing_dvc_project(tmp_path: Path) -> None:
    (tmp_path / ".dvc").mkdir()
    nested = tmp_path / "benchmarks" / "ssl"
    nested.mkdir(parents=True)
    assert store_root(nested) == tmp_path
    assert store_root(tmp_path) == tmp_path
    outside = tmp_path.parent / f"{tmp_path.name}-plain"
    outside.mkdir()
    assert store_root(outside) == outside.resolve()


def test_default_uri_is_at_project_root(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / ".dvc").mkdir()
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "sub")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "")  # unset, and restored after the test
    assert tracking_uri() == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://server:5000")
    assert tracking_uri() == "http://server:5000"


def test_runtime_experiment_names_the_experiment(tmp_path: Path, monkeypatch) -> None:
    mlflow = pytest.importorskip("mlflow")
    (tmp_path / ".dvc").mkdir()
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "sub")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "")  # unset, and restored after the test
    params = load_params(REPO / "params.yaml", ["runtime.experiment=my-bench"])
    with stage_run("train", params, "imas") as run:
        run.log_metrics({"x": 1.0})
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}")
    exp = client.get_experiment_by_name("my-bench")
    assert exp is not None and client.get_experiment_by_name("imas-embedded") is None
    # Artifacts sit beside the store at the project root, not under the cwd.
    assert exp.artifact_location == (tmp_path.resolve() / "mlruns").as_uri()
    assert not (tmp_path / "sub" / "mlruns").exists()
