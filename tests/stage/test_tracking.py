"""Where the default MLflow store lives, and which experiment a stage's run goes to."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.config.params import load_params
from pipeline.control.tracking import effective_params, stage_run, store_root, tracking_uri

REPO = Path(__file__).resolve().parents[2]


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
    assert exp is not None and client.get_experiment_by_name("imas-garments") is None
    # Artifacts sit beside the store at the project root, not under the cwd.
    assert exp.artifact_location == (tmp_path.resolve() / "mlruns").as_uri()
    assert not (tmp_path / "sub" / "mlruns").exists()


def test_effective_params_are_what_training_applies() -> None:
    # A fresh schedule (init: warmup), so the two sections may differ in LR: a run continuing
    # the warmup's schedule (the default) must share it.
    pinned = ["warmup.lr=0.1", "train.lr=0.05", "train.init=warmup", "train.adaptive.intensity=mix"]
    params = load_params(REPO / "params.yaml", pinned)
    imas = effective_params(params.train)
    assert imas["effective.method"] == "imas"
    assert imas["effective.adaptive.intensity"] == "mix"
    assert imas["effective.adaptive.cutmix_trigger"] == params.train.adaptive.cutmix_trigger
    # The baseline is configured from the same `train.adaptive`, but runs with none of it.
    mt = effective_params(params.ablation("mean_teacher"))
    assert mt["effective.method"] == "mean_teacher"
    assert mt["effective.adaptive.intensity"] == "strong"
    assert mt["effective.adaptive.loss_weight"] is False
    assert mt["effective.adaptive.cutmix_trigger"] == "fixed"
    assert mt["effective.adaptive.cutmix_pairing"] == "random"
    warm = effective_params(params.warmup)
    assert warm["effective.lr"] == params.warmup.lr != params.train.lr
    assert warm["effective.adaptive.cutmix"] is False and warm["effective.tau"] is None
    assert warm["effective.adaptive.intensity"] is None
    # SupOnly continued from the warmup: `train.tau` is set but nothing reads it.
    sup = effective_params(
        load_params(REPO / "params.yaml", [*pinned, "train.method=supervised"]).train
    )
    assert params.train.tau is not None and sup["effective.tau"] is None
    assert sup["effective.adaptive.intensity"] is None
    # Every run has the same keys, so the compare view lines them up row by row.
    assert set(imas) == set(mt) == set(sup) == set(warm) | {"effective.init"}


@pytest.fixture
def client(tmp_path: Path, monkeypatch):
    """An MLflow client on a fresh sqlite store that `stage_run` logs to."""
    mlflow = pytest.importorskip("mlflow")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return mlflow.MlflowClient(tracking_uri=uri)


def test_only_training_stages_log_effective_params(client) -> None:
    # An iMAS ablation, whichever ablations the params file lists.
    params = load_params(
        REPO / "params.yaml", ["ablations={no_loss_weight: {adaptive: {loss_weight: false}}}"]
    )
    cfg = params.ablation("no_loss_weight")
    with stage_run(
        "ablate:no_loss_weight", params, "imas", {"ablation": "no_loss_weight"}, train_cfg=cfg
    ):
        pass
    with stage_run("report", params, "report"):
        pass
    exp = client.get_experiment_by_name("imas-garments")
    runs = {r.info.run_name: r for r in client.search_runs([exp.experiment_id])}
    ablation_run = runs[f"ablate:no_loss_weight-imas-{params.labeled}-s{params.seed}"]
    assert ablation_run.data.tags["split_family"] == params.data.split.family == "classic"
    assert ablation_run.data.tags["split_source"] == "generated"
    ablation = ablation_run.data.params
    assert ablation["effective.adaptive.loss_weight"] == "False"
    assert ablation["effective.adaptive.intensity"] == "mix"
    report = runs[f"report-report-{params.labeled}-s{params.seed}"].data.params
    assert not any(key.startswith("effective.") for key in report)


def test_effective_params_keep_their_keys_with_ohem_on_or_off() -> None:
    params = load_params(REPO / "params.yaml")
    off = effective_params(params.train)
    ohem = {"thresh": 0.7, "min_kept": 100000}
    on = effective_params(
        type(params.train).model_validate({**params.train.model_dump(), "ohem": ohem})
    )
    assert set(on) == set(off)
    assert off["effective.ohem.thresh"] is None and on["effective.ohem.thresh"] == 0.7
    assert on["effective.aux_weight"] == off["effective.aux_weight"] == 0.0


def test_torchvision_stem_resnet_runs_are_tagged_a_deviation(client) -> None:
    tiny = load_params(REPO / "params.yaml")
    r18 = load_params(
        REPO / "params.yaml", ["model.backbone=resnet18", "model.stem=torchvision", "seed=1"]
    )
    deep = load_params(
        REPO / "params.yaml", ["model.backbone=resnet50", "model.stem=deep", "seed=2"]
    )
    for params in (tiny, r18, deep):
        with stage_run("warmup", params, "supervised"):
            pass
    exp = client.get_experiment_by_name("imas-garments")
    tags = {r.data.tags["seed"]: r.data.tags for r in client.search_runs([exp.experiment_id])}
    assert tags["1"]["deviation"] == "torchvision-stem"
    assert "deviation" not in tags["0"] and "deviation" not in tags["2"]


def test_a_queued_experiment_logs_to_the_project_that_queued_it(
    tmp_path: Path, monkeypatch
) -> None:
    mlflow = pytest.importorskip("mlflow")
    (tmp_path / ".dvc").mkdir()
    clone = tmp_path / ".dvc/tmp/exps/tmpabc123"  # DVC's temporary clone, with its own .dvc
    (clone / ".dvc").mkdir(parents=True)
    monkeypatch.chdir(clone)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "")  # unset, and restored after the test
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    monkeypatch.setenv("DVC_EXP_NAME", "peaky-bawl")
    with stage_run("split", load_params(REPO / "params.yaml"), "data"):
        pass
    assert not (clone / "mlflow.db").exists() and not (clone / "mlruns").exists()
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}")
    exp = client.get_experiment_by_name("imas-garments")
    assert exp.artifact_location == (tmp_path.resolve() / "mlruns").as_uri()
    (run,) = client.search_runs([exp.experiment_id])
    assert run.data.tags["dvc_experiment"] == "peaky-bawl"


# Two stages opening one fresh store at the same moment, as the first stages of a `-j 2` queue.
_OPEN_STORE = """
import sys, time
from pathlib import Path
import mlflow  # imported before the start signal, so both processes reach the store together
from pipeline.config.params import load_params
from pipeline.control.tracking import stage_run

params = load_params(Path(sys.argv[1]), [f"runtime.experiment=race-{sys.argv[2]}"])
Path(f"ready-{sys.argv[3]}").touch()
while not Path("go").exists():
    time.sleep(0.005)
with stage_run("split", params, "data", job=sys.argv[3]):
    pass
"""


def test_parallel_stages_create_one_store_and_experiment(tmp_path: Path) -> None:
    mlflow = pytest.importorskip("mlflow")
    env = {k: v for k, v in os.environ.items() if k not in {"MLFLOW_TRACKING_URI", "DVC_ROOT"}}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    # Twice: without the store lock, the first round already failed every time it was tried.
    for attempt in range(2):
        project = tmp_path / str(attempt)  # a new file: MLflow keeps a deleted one open
        (project / ".dvc").mkdir(parents=True)
        cmd = [sys.executable, "-c", _OPEN_STORE, str(REPO / "params.yaml"), str(attempt)]
        procs = [
            subprocess.Popen([*cmd, job], cwd=project, env=env, stderr=subprocess.PIPE, text=True)
            for job in ("a", "b")
        ]
        deadline = time.monotonic() + 120
        while not all((project / f"ready-{j}").exists() for j in "ab"):
            assert time.monotonic() < deadline and all(p.poll() is None for p in procs)
            time.sleep(0.05)
        (project / "go").touch()
        errors = [p.communicate(timeout=120)[1] for p in procs]
        assert [p.returncode for p in procs] == [0, 0], "\n".join(e[-3000:] for e in errors)
        client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
        exp = client.get_experiment_by_name(f"race-{attempt}")
        runs = client.search_runs([exp.experiment_id])
        assert sorted(r.data.tags["job"] for r in runs) == ["a", "b"]
