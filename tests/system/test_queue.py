"""A queued sweep end to end: `dvc exp run --queue -S labeled=A,B` + `dvc queue start -j 2`.

On a tiny copy of the project (tiny garment scenes), up to `train` (download, pretrain, split,
warmup, train: every kind of stage a sweep runs, in about a minute). Both experiments run at once
in DVC's temporary clones; their metrics must reach `dvc exp show`, their MLflow runs the
project's own store, and each job must train with the threads the rule of
pipeline/control/threads.py gives for two parallel jobs.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from support.dvc_project import ROOT, ignore, run
from support.params import tiny_garments

from pipeline.acquire.fashion_mnist import DEBIAN_DIR
from pipeline.control.dvc_context import QUEUE_WORKERS, queue_workers
from pipeline.control.threads import cpu_count, threads_per_job

LABELED = (4, 8)  # at least a labeled batch (tiny_garments: 4), within the 12 fine scenes
THREADS = 2  # params.yaml's default: alone it is kept, in a `-j 2` queue capped at cores // 2
TIMEOUT = 600
# The dvc.yaml pipeline needs the garment scenes (its train stage starts from the pretrain
# stage's backbone, which only they have), so Fashion-MNIST, as in test_pipeline_e2e.
pytestmark = pytest.mark.skipif(
    not (DEBIAN_DIR / "train-images-idx3-ubyte.gz").is_file(),
    reason=f"Fashion-MNIST is not in {DEBIAN_DIR}: `make setup` installs it (apt-get install "
    "dataset-fashion-mnist, as root)",
)


def queue_states(project: Path, env: dict) -> dict[str, str]:
    """`dvc queue status` as {experiment name: Queued | Running | Success | Failed}."""
    out = run(["dvc", "queue", "status"], project, env)
    states = {}
    for line in out.splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 4 and not line.startswith("Worker status"):
            states[fields[1]] = fields[-1]
    return states


def stop_workers(project: Path, env: dict) -> None:
    """Stop this project's queue workers, killing them if `dvc queue stop` does not."""
    subprocess.run(["dvc", "queue", "stop", "--kill"], cwd=project, env=env, capture_output=True)
    deadline = time.monotonic() + 30
    while queue_workers(project) and time.monotonic() < deadline:
        time.sleep(0.5)
    for record in (project / QUEUE_WORKERS).glob("dvc-exp-worker-*.json"):
        info = json.loads(record.read_text())
        if info.get("returncode") is None:
            with contextlib.suppress(ProcessLookupError):  # recorded under this test's project
                os.kill(info["pid"], signal.SIGKILL)


def experiments(shown: list[dict]) -> dict[str, dict[str, Any]]:
    """`dvc exp show --json` as {experiment name: its data (params, metrics)}."""
    found = {}
    for baseline in shown:
        for exp in baseline.get("experiments") or []:
            for rev in exp.get("revs") or []:
                found[rev.get("name") or exp.get("name")] = rev["data"]
    return found


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, Any], float]]:
    """The project after the sweep, `dvc exp show --json` by experiment name, and its seconds."""
    if shutil.which("dvc") is None and not (Path(sys.executable).parent / "dvc").exists():
        pytest.fail("dvc is not installed: `make setup` installs it")
    project = tmp_path_factory.mktemp("queue") / "imas"
    shutil.copytree(ROOT, project, ignore=ignore)
    raw = tiny_garments(yaml.safe_load((project / "params.yaml").read_text()))
    raw["runtime"]["threads"] = THREADS
    (project / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    # Stage commands import this checkout (PYTHONPATH first), whatever `imas` is installed from.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    for name in ("MLFLOW_TRACKING_URI", "IMAS_JOBS", "DVC_ROOT", "DVC_EXP_NAME"):
        env.pop(name, None)
    env.update(DVC_NO_ANALYTICS="1", MLFLOW_DISABLE_TELEMETRY="true", OMP_WAIT_POLICY="PASSIVE")
    run(["git", "init", "-q"], project, env)
    run(["git", "add", "-A"], project, env)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init"], project, env)
    labeled = ",".join(map(str, LABELED))
    start = time.monotonic()
    try:
        queue = ["dvc", "exp", "run", "--queue", "-S", f"labeled={labeled}", "train"]
        out = run(queue, project, env)
        assert out.count("Queued experiment") == len(LABELED), out
        # As `make sweep` does: the workers pass IMAS_JOBS on to every stage they run. Counting
        # live workers at stage start saw 1 of 2 once on a loaded machine (the second had not
        # registered yet), so the count only stands in when nobody says how many jobs run.
        # Output to a file, not a pipe: the workers inherit it, and reading a pipe to its end
        # would wait for them to exit.
        with open(project.parent / "queue-start.log", "w+") as log:
            started = subprocess.run(
                ["dvc", "queue", "start", "-j", "2"],
                cwd=project,
                env={**env, "IMAS_JOBS": "2"},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            log.seek(0)
            assert started.returncode == 0, log.read()
        workers_seen = 0
        while True:  # until the workers have started and then all exited with the queue empty
            alive = queue_workers(project)
            workers_seen = max(workers_seen, alive)
            if workers_seen and not alive:
                break
            assert time.monotonic() - start < TIMEOUT, f"queue still busy: {alive} workers"
            time.sleep(1)
        # The fallback reads DVC's own worker records: both workers were seen alive.
        assert workers_seen == 2
        states = queue_states(project, env)
        failed = [name for name, state in states.items() if state != "Success"]
        if failed:
            logs = [run(["dvc", "queue", "logs", name], project, env)[-4000:] for name in failed]
            pytest.fail(f"queued experiments {states}:\n" + "\n".join(logs))
        seconds = time.monotonic() - start
        shown = experiments(json.loads(run(["dvc", "exp", "show", "--json"], project, env)))
        yield project, shown, seconds
    finally:
        stop_workers(project, env)


def test_each_labeled_value_is_one_experiment_in_exp_show(sweep) -> None:
    _, shown, _ = sweep
    by_labeled = {data["params"]["params.yaml"]["data"]["labeled"]: data for data in shown.values()}
    assert sorted(by_labeled) == sorted(LABELED), shown.keys()
    for data in by_labeled.values():
        train = data["metrics"]["metrics/train.json"]["data"]
        assert train["method"] == "imas" and 0 <= train["miou"] <= 100
        assert "miou" in data["metrics"]["metrics/warmup.json"]["data"]


def test_both_jobs_log_to_the_projects_store_with_shared_threads(sweep) -> None:
    project, shown, _ = sweep
    import mlflow

    names = {data["params"]["params.yaml"]["data"]["labeled"]: name for name, data in shown.items()}
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    exp = client.get_experiment_by_name("imas-garments")
    assert exp.artifact_location == (project / "mlruns").as_uri()
    runs = {r.info.run_name: r for r in client.search_runs([exp.experiment_id])}
    expected = threads_per_job(THREADS, cpu_count(), 2)
    for labeled in LABELED:
        for stage in ("download-data", "split-data", "warmup-supervised", "train-imas"):
            assert f"{stage}-{labeled}-s0" in runs, sorted(runs)
        for stage in ("warmup-supervised", "train-imas"):
            logged = runs[f"{stage}-{labeled}-s0"]
            assert logged.info.status == "FINISHED"
            assert logged.data.tags["dvc_experiment"] == names[labeled]
            assert logged.data.params["runtime.threads"] == str(THREADS)
            assert logged.data.params["runtime.parallel_jobs"] == "2"
            assert logged.data.params["runtime.threads_effective"] == str(expected)


def test_the_sweep_leaves_no_store_in_the_clones_and_no_workers(sweep) -> None:
    project, _, seconds = sweep
    print(f"queued sweep of {len(LABELED)} experiments: {seconds:.0f} s")
    assert not list((project / ".dvc/tmp/exps").glob("**/mlflow.db"))
    # Workers exit by themselves once the queue is empty (DVC gives them about 10 s).
    deadline = time.monotonic() + 60
    while queue_workers(project) and time.monotonic() < deadline:
        time.sleep(1)
    assert queue_workers(project) == 0
