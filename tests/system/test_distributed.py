"""Data-parallel training on CPU (gloo, 2 processes): fit under DDP, the train stage's rank-0
outputs and sharded evaluation, and the `runtime.nproc` relaunch under torchrun."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from support.ddp_worker import fit_worker, spawn, stage_worker
from support.params import tiny_params
from support.project import build
from typer.testing import CliRunner

from imas import distributed
from imas.evaluate import evaluate
from imas.model import build_model
from pipeline.cli import app
from pipeline.config.params import load_params
from pipeline.training.checkpoints import load_checkpoint, resume_path
from pipeline.training.loaders import val_loader

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("world", [1, 2, 3, 4])
@pytest.mark.parametrize("length", [0, 1, 5, 7, 13])
def test_val_shards_cover_every_index_exactly_once(world: int, length: int) -> None:
    shards = [list(distributed.shard(length, r, world)) for r in range(world)]
    assert sorted(i for s in shards for i in s) == list(range(length))
    assert max(map(len, shards)) - min(map(len, shards)) <= 1


def test_helpers_are_no_ops_without_a_process_group() -> None:
    assert (distributed.world_size(), distributed.rank(), distributed.is_main()) == (1, 0, True)
    t = torch.arange(3)
    assert distributed.all_reduce_sum(t) is t and t.tolist() == [0, 1, 2]
    assert distributed.gather_cat(t) is t
    assert distributed.mean_over_ranks({"a": 1.5}) == {"a": 1.5}
    assert distributed.rank_seed(7, 0) == 7 and distributed.rank_seed(7, 1) != 8


def test_fit_under_ddp_keeps_ranks_equal_and_resumes_exactly(tmp_path: Path) -> None:
    spawn(fit_worker, 2, str(tmp_path))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny params (total batch 4 + 4: micro-batches of 2 + 2 on 2 ranks), data, split and a
    single-process warmup."""
    work = tmp_path_factory.mktemp("ddp")
    raw = tiny_params()
    for section in ("warmup", "train"):
        raw[section].update(batch_labeled=4, batch_unlabeled=4, epochs=2)
    raw["runtime"].update(checkpoint_every=1, threads=2)
    return build(work, ["download", "split", "warmup"], raw)


def mlflow_runs(work: Path, prefix: str) -> list:
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{work / 'mlflow.db'}")
    exp = client.get_experiment_by_name("imas-embedded")
    runs = client.search_runs([exp.experiment_id])
    return [r for r in runs if r.info.run_name.startswith(prefix)]


def test_train_stage_on_two_ranks_writes_once_and_evaluates_like_one_process(
    workdir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{workdir / 'mlflow.db'}")
    spawn(stage_worker, 2, str(workdir), str(tmp_path))
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    params = load_params(workdir / "params.yaml")
    iters = params.train.epochs * params.train.iters_per_epoch

    # Rank 0 alone writes every output once, and the resume file at every checkpoint.
    assert ranks[1]["writes"] == [] and ranks[1]["summary"] is None
    kinds = [kind for kind, _ in ranks[0]["writes"]]
    assert kinds == ["save_resume"] * (iters - 1) + [
        "save_checkpoint",
        "write_json",
        "write_history",
        "write_hardness",
    ]
    assert not resume_path(workdir / "models/ddp.pt").exists()
    [run] = mlflow_runs(workdir, "train-")  # one MLflow run, opened by rank 0
    assert run.info.status == "FINISHED" and "step/loss" in run.data.metrics
    assert [r["threads"] for r in ranks] == [1, 1]  # runtime.threads 2 shared by 2 processes
    assert [r["seed"] for r in ranks] == [0, distributed.rank_seed(0, 1)]  # own augmentations

    # Both ranks saw the same (summed) scores; the last two are the final student and teacher.
    assert [e["miou"] for e in ranks[0]["evals"]] == [e["miou"] for e in ranks[1]["evals"]]
    checkpoint = load_checkpoint(workdir / "models/ddp.pt")
    val = val_loader(params, workdir / "data/garments")
    for who, recorded in zip(("student", "teacher"), ranks[0]["evals"][-2:], strict=True):
        net = build_model(params.model)
        net.load_state_dict(checkpoint["last"][who])
        single = evaluate(net, val, params.model.num_classes)
        assert torch.equal(recorded["confusion"], single["confusion"]), who
        assert recorded["miou"] == single["miou"], who

    # Hardness of every rank's images: epochs × iterations × the total unlabeled batch.
    rows = (workdir / "metrics/ddp_hardness.csv").read_text().splitlines()[1:]
    assert len(rows) == iters * params.train.batch_unlabeled


def test_nproc_reruns_the_stage_under_torchrun(workdir: Path) -> None:
    before = len(mlflow_runs(workdir, "warmup-"))
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "MLFLOW_TRACKING_URI": f"sqlite:///{workdir / 'mlflow.db'}",
        "OMP_WAIT_POLICY": "PASSIVE",
    }
    outputs = ["--out", "models/w2.pt", "--metrics", "metrics/w2.json", "--history", "w2.csv"]
    cmd = [sys.executable, "-m", "pipeline.cli", "warmup", *outputs, "--set", "runtime.nproc=2"]
    proc = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "rerunning under torchrun" in proc.stderr
    assert proc.stdout.count("warmup: best val mIoU") == 1  # rank 0 only
    assert len(mlflow_runs(workdir, "warmup-")) == before + 1
    [run] = [r for r in mlflow_runs(workdir, "warmup-") if r.data.params["runtime.nproc"] == "2"]
    assert run.info.status == "FINISHED"
    checkpoint = load_checkpoint(workdir / "models/w2.pt")
    assert checkpoint["method"] == "supervised" and (workdir / "w2.csv").is_file()


def test_nproc_outside_a_command_line_is_refused(workdir: Path, monkeypatch) -> None:
    monkeypatch.chdir(workdir)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    with pytest.raises(RuntimeError, match=r"runtime\.nproc=2 reruns `imas warmup"):
        CliRunner().invoke(app, ["warmup", "--set", "runtime.nproc=2"], catch_exceptions=False)
