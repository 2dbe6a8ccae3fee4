"""`dvc repro` and `dvc exp run` end to end in a throwaway copy of the repo, with tiny params."""

from __future__ import annotations

import csv
import json
import os
import shutil
import sys
from pathlib import Path

import pytest
import yaml
from support.dvc_project import ignore, run
from support.params import tiny_garments

from pipeline.acquire.fashion_mnist import DEBIAN_DIR

ROOT = Path(__file__).resolve().parents[2]
# The built-in garment scenes need Fashion-MNIST; the test does not download it (60 MB).
pytestmark = pytest.mark.skipif(
    not (DEBIAN_DIR / "train-images-idx3-ubyte.gz").is_file(),
    reason=f"Fashion-MNIST is not in {DEBIAN_DIR}: `make setup` installs it (apt-get install "
    "dataset-fashion-mnist, as root)",
)


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    dst = tmp_path_factory.mktemp("repo") / "imas"
    shutil.copytree(ROOT, dst, ignore=ignore)
    (dst / "reports").mkdir(exist_ok=True)
    params = tiny_garments(yaml.safe_load((dst / "params.yaml").read_text()))
    (dst / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env.pop("MLFLOW_TRACKING_URI", None)
    env.update(DVC_NO_ANALYTICS="1", MLFLOW_DISABLE_TELEMETRY="true", OMP_WAIT_POLICY="PASSIVE")
    for cmd in (
        ["git", "init", "-q"],
        ["git", "add", "-A"],
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init"],
    ):
        run(cmd, dst, env)
    return dst, env


@pytest.fixture(scope="module")
def repro(repo: tuple[Path, dict]) -> tuple[Path, dict, str]:
    dst, env = repo
    return dst, env, run(["dvc", "repro"], dst, env)


def test_repro_writes_every_output(repro) -> None:
    dst, _, _ = repro
    assert len((dst / "data/split/labeled.txt").read_text().split("\n")) == 6
    assert len((dst / "data/split/unlabeled.txt").read_text().split("\n")) == 18
    assert json.loads((dst / "metrics/pretrain.json").read_text())["images"] == 40
    for name in ("pretrained", "warmup", "imas", "ablate/supervised", "ablate/mean_teacher"):
        assert (dst / f"models/{name}.pt").is_file(), name
    train = json.loads((dst / "metrics/train.json").read_text())
    assert train["method"] == "imas" and 0 <= train["miou"] <= 100 and train["iterations"] == 4
    # One schedule: SupOnly and mean teacher continue the warmup for as long as iMAS.
    sup = json.loads((dst / "metrics/ablate/supervised.json").read_text())
    assert sup["method"] == "supervised" and sup["iterations"] == 4
    mt = json.loads((dst / "metrics/ablate/mean_teacher.json").read_text())
    assert mt["method"] == "mean_teacher" and mt["iterations"] == 4
    evaluation = json.loads((dst / "metrics/evaluate.json").read_text())
    assert {"supervised", "imas_teacher_best", "imas_teacher_last"} <= set(evaluation)
    assert evaluation["imas_teacher_best"]["miou"] == train["miou"]
    assert evaluation["supervised"]["miou"] == sup["miou"]
    assert evaluation["class_names"][1] == "T-shirt/top"
    summary = json.loads((dst / "reports/metrics.json").read_text())
    assert summary["imas"] == round(train["miou"], 2)
    assert summary["supervised"] == round(sup["miou"], 2)
    assert "warmup" in summary  # the first part of the schedule, beside the methods
    md = (dst / "reports/results.md").read_text()
    assert "Mean teacher" in md and "| warmup (first part of the schedule) |" in md
    for png in ("qualitative", "training_curves", "ablation_bars", "easiness", "hardness"):
        assert (dst / f"reports/figures/{png}.png").read_bytes()[:4] == b"\x89PNG"


def test_repro_logs_every_stage_to_mlflow(repro) -> None:
    dst, _, _ = repro
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{dst / 'mlflow.db'}")
    exp = client.get_experiment_by_name("imas-garments")
    runs = {r.info.run_name: r for r in client.search_runs([exp.experiment_id])}
    for name in (
        "download-data-6-s0",
        "pretrain-pretrain-6-s0",
        "split-data-6-s0",
        "warmup-supervised-6-s0",
        "train-imas-6-s0",
        "ablate:supervised-supervised-6-s0",
        "ablate:mean_teacher-mean_teacher-6-s0",
        "evaluate-imas-6-s0",
        "report-report-6-s0",
    ):
        assert name in runs, sorted(runs)
        assert runs[name].info.status == "FINISHED"
    train = runs["train-imas-6-s0"]
    assert train.data.tags["stage"] == "train" and train.data.tags["labeled"] == "6"
    tau = yaml.safe_load((dst / "params.yaml").read_text())["train"]["tau"]
    assert train.data.params["train.tau"] == str(tau)
    assert train.data.params["train.adaptive.cutmix_trigger"] == "easiness"
    assert "epoch/miou_teacher" in train.data.metrics and "step/loss" in train.data.metrics
    history = client.get_metric_history(train.info.run_id, "step/easiness")
    assert len(history) >= 1
    # Epoch curves in points, like the summary: the last one equals the history CSV's last row.
    curve = client.get_metric_history(train.info.run_id, "epoch/miou_teacher")
    with (dst / "metrics/train_history.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert round(curve[-1].value, 4) == float(rows[-1]["miou_teacher"])
    artifacts = {a.path for a in client.list_artifacts(train.info.run_id)}
    assert "checkpoints" in artifacts
    ablation = runs["ablate:mean_teacher-mean_teacher-6-s0"]
    assert ablation.data.params["effective.adaptive.loss_weight"] == "False"


def test_second_repro_is_up_to_date(repro) -> None:
    dst, env, _ = repro
    # The main pipeline only: benchmarks/*/dvc.yaml have their own (unrun here) stages.
    out = run(["dvc", "status", "dvc.yaml"], dst, env)
    assert "up to date" in out


def test_exp_run_with_other_label_count(repro) -> None:
    dst, env, _ = repro
    run(["git", "add", "-A"], dst, env)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "repro"], dst, env)
    out = run(["dvc", "exp", "run", "-S", "labeled=8"], dst, env)
    assert "Running stage 'download'" not in out
    assert "Running stage 'pretrain'" not in out  # no labels in it: one pretraining serves all
    assert "Running stage 'split'" in out
    shown = json.loads(run(["dvc", "exp", "show", "--json"], dst, env))
    text = json.dumps(shown)
    assert '"labeled": 8' in text and '"labeled": 6' in text
