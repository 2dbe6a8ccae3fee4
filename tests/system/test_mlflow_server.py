"""Stages logging to a real `mlflow server` over HTTP, and its UI's compare page in Chromium.

Everything is read back the way a user would see it: MLflow's REST API and the rendered UI, not
the Python client that wrote it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
import yaml
from PIL import Image
from support.params import tiny
from typer.testing import CliRunner

from pipeline.cli import app

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
# First start measured at 8-14 s on 2 busy cores; the margin covers a slower CI machine.
HEALTH_TIMEOUT = 90.0
WARMUP = "warmup-supervised-4-s0"
MEAN_TEACHER = "ablate:mean_teacher-mean_teacher-4-s0"


def tiny_pinned(raw: dict[str, Any]) -> dict[str, Any]:
    raw = tiny(raw)
    # Pinned, whatever params.yaml says: the checks tell the sections apart by these values.
    # Not by the LR: the training runs continue the warmup's schedule, so the two share it.
    raw["warmup"]["batch_labeled"], raw["train"]["batch_labeled"] = 4, 2
    raw["train"]["adaptive"]["intensity"] = "mix"
    return raw


@dataclass(frozen=True)
class Server:
    url: str
    artifacts: Path


@dataclass(frozen=True)
class Logged:
    server: Server
    workdir: Path
    experiment: dict[str, Any]
    runs: dict[str, dict[str, Any]]  # by run name, as runs/search returns them


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop(proc: subprocess.Popen, grace: float = 30.0) -> None:
    """SIGTERM the process, then SIGKILL whatever is left of its process group."""
    if proc.poll() is None:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=grace)
    # The group is the process's own (start_new_session), so this reaches only its children.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=grace)


def get_json(url: str, **query: str) -> dict[str, Any]:
    full = f"{url}?{urllib.parse.urlencode(query)}" if query else url
    with urllib.request.urlopen(full, timeout=30) as resp:
        return json.load(resp)


def post_json(url: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as resp:
        return json.load(resp)


def wait_healthy(url: str, proc: subprocess.Popen, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"mlflow server exited with code {proc.returncode} before answering "
                f"{url}/health; its log:\n{log.read_text()[-4000:]}"
            )
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    raise RuntimeError(
        f"mlflow server did not answer {url}/health within {timeout:.0f} s; its log:\n"
        f"{log.read_text()[-4000:]}"
    )


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    home = tmp_path_factory.mktemp("mlflow-server")
    artifacts = home / "artifacts"
    port = free_port()
    env = dict(os.environ)
    env.pop("MLFLOW_TRACKING_URI", None)
    # The job runner adds child processes and about 20 s to start-up; nothing here uses it.
    env.update(MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false", MLFLOW_DISABLE_TELEMETRY="true")
    cmd = [
        str(BIN / "mlflow"), "server",
        "--backend-store-uri", f"sqlite:///{home / 'mlflow.db'}",
        "--default-artifact-root", str(artifacts),
        "--host", "127.0.0.1", "--port", str(port),
        "--workers", "1",
    ]  # fmt: skip
    log = home / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd, cwd=home, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_healthy(url, proc, log, HEALTH_TIMEOUT)
        yield Server(url, artifacts)
    finally:
        stop(proc)


def imas(workdir: Path, tracking: str, *args: str) -> None:
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env['PATH']}"
    env.update(
        MLFLOW_TRACKING_URI=tracking, MLFLOW_DISABLE_TELEMETRY="true", OMP_WAIT_POLICY="PASSIVE"
    )
    proc = subprocess.run(
        ["imas", *args], cwd=workdir, env=env, capture_output=True, text=True, timeout=300
    )
    if proc.returncode != 0:
        raise AssertionError(
            f"imas {' '.join(args)} failed ({proc.returncode}):\n"
            f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )


@pytest.fixture(scope="module")
def logged(server: Server, tmp_path_factory: pytest.TempPathFactory) -> Logged:
    work = tmp_path_factory.mktemp("stages")
    raw = tiny_pinned(yaml.safe_load((ROOT / "params.yaml").read_text()))
    (work / "params.yaml").write_text(yaml.safe_dump(raw))
    # Data preparation in process and in a local store, so the server holds only the runs
    # under test; the training stages are real `imas` processes pointed at the server.
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(work)
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{work / 'prep.db'}")
        for stage in ("download", "split"):
            result = CliRunner().invoke(app, [stage], catch_exceptions=False)
            assert result.exit_code == 0, result.output
    imas(work, server.url, "warmup")
    imas(work, server.url, "ablate", "mean_teacher")

    api = f"{server.url}/api/2.0/mlflow"
    experiment = get_json(f"{api}/experiments/get-by-name", experiment_name="imas-embedded")
    found = post_json(
        f"{api}/runs/search",
        {"experiment_ids": [experiment["experiment"]["experiment_id"]], "max_results": 50},
    )
    runs = {run["info"]["run_name"]: run for run in found.get("runs", [])}
    return Logged(server, work, experiment["experiment"], runs)


def params_of(run: dict[str, Any]) -> dict[str, str]:
    return {p["key"]: p["value"] for p in run["data"].get("params", [])}


def metrics_of(run: dict[str, Any]) -> dict[str, float]:
    return {m["key"]: m["value"] for m in run["data"].get("metrics", [])}


def artifacts_of(server: Server, run_id: str, path: str = "") -> dict[str, dict[str, Any]]:
    query = {"run_id": run_id, **({"path": path} if path else {})}
    listing = get_json(f"{server.url}/api/2.0/mlflow/artifacts/list", **query)
    return {f["path"]: f for f in listing.get("files", [])}


def test_training_stages_log_to_a_tracking_server(logged: Logged) -> None:
    tags = {t["key"]: t["value"] for t in logged.experiment.get("tags", [])}
    # Without this tag MLflow 3's UI opens the experiment in its GenAI view.
    assert tags.get("mlflow.experimentKind") == "custom_model_development"
    # The experiment's artifacts live under the server's root, not the stage's working folder.
    assert logged.experiment["artifact_location"].startswith(str(logged.server.artifacts))
    assert sorted(logged.runs) == sorted([MEAN_TEACHER, WARMUP])

    for name, stage, method in (
        (WARMUP, "warmup", "supervised"),
        (MEAN_TEACHER, "ablate:mean_teacher", "mean_teacher"),
    ):
        run = logged.runs[name]
        assert run["info"]["status"] == "FINISHED", name
        run_tags = {t["key"]: t["value"] for t in run["data"]["tags"]}
        assert run_tags["stage"] == stage and run_tags["labeled"] == "4"
        params = params_of(run)
        assert params["labeled"] == "4" and params["seed"] == "0"
        assert params["method"] == method and params["effective.method"] == method
        metrics = metrics_of(run)
        assert 0 <= metrics["miou"] <= 100 and metrics["iterations"] == 2
        assert "epoch/miou_student" in metrics and "step/loss" in metrics

    warm = params_of(logged.runs[WARMUP])
    # The warmup's own section, not the `train` section it never read.
    assert warm["effective.batch_labeled"] == warm["warmup.batch_labeled"] == "4"
    assert warm["train.batch_labeled"] == "2"
    assert warm["effective.adaptive.cutmix"] == "False"
    assert warm["effective.adaptive.intensity"] == "null"
    assert warm["effective.tau"] == "null"

    mt = logged.runs[MEAN_TEACHER]
    mt_params = params_of(mt)
    assert mt_params["ablation"] == "mean_teacher" and mt_params["train.method"] == "mean_teacher"
    # Configured on in `train.adaptive`, but the mean-teacher baseline runs without them.
    assert mt_params["train.adaptive.intensity"] == "mix"
    assert mt_params["effective.adaptive.intensity"] == "strong"
    assert mt_params["effective.adaptive.loss_weight"] == "False"
    assert mt_params["effective.adaptive.cutmix_trigger"] == "fixed"
    assert "epoch/miou_teacher" in metrics_of(mt)

    run_id = logged.runs[WARMUP]["info"]["run_id"]
    files = artifacts_of(logged.server, run_id)
    assert {"warmup.json", "warmup_history.csv", "checkpoints"} <= set(files)
    assert files["checkpoints"]["is_dir"]
    checkpoint = artifacts_of(logged.server, run_id, "checkpoints")["checkpoints/warmup.pt"]
    assert checkpoint["file_size"] == (logged.workdir / "models/warmup.pt").stat().st_size
    # The artifact the server hands out is the metrics file the stage wrote.
    with urllib.request.urlopen(
        f"{logged.server.url}/get-artifact?"
        + urllib.parse.urlencode({"path": "warmup.json", "run_uuid": run_id}),
        timeout=30,
    ) as resp:
        served = json.load(resp)
    assert served == json.loads((logged.workdir / "metrics/warmup.json").read_text())


@pytest.fixture(scope="module")
def browser() -> str:
    """Chromium's path; module-scoped so that a skip comes before the server starts."""
    found = shutil.which("chromium")
    if found is None:
        pytest.skip(
            "chromium is not installed, so the MLflow UI is not checked: install it with "
            "`sudo apt-get install -y --no-install-recommends chromium` (.ci/run does in CI)"
        )
    return found


def headless(browser: str, profile: Path, url: str, *output: str) -> str:
    """Run headless Chromium on `url` with `output` flags; return its stdout."""
    cmd = [
        browser, "--headless", "--no-sandbox", "--disable-gpu",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--no-first-run", f"--user-data-dir={profile}", "--window-size=1400,1000",
        # The SPA fetches and renders after load; virtual time lets it settle before output.
        "--virtual-time-budget=20000",
        *output, url,
    ]  # fmt: skip
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=120)
    finally:
        stop(proc, grace=10)
    if proc.returncode != 0:
        raise AssertionError(f"chromium {' '.join(output)} failed:\n{err[-3000:]}")
    return out


def test_ui_compare_page_shows_both_runs(browser: str, logged: Logged, tmp_path: Path) -> None:
    ids = [logged.runs[name]["info"]["run_id"] for name in (WARMUP, MEAN_TEACHER)]
    experiment_id = logged.experiment["experiment_id"]
    # The route of MLflow 3.17's compare page (getCompareRunPageRoute in its JS bundle).
    query = urllib.parse.urlencode(
        {"runs": json.dumps(ids), "experiments": json.dumps([experiment_id])}
    )
    url = f"{logged.server.url}/#/compare-runs?{query}"

    dom = headless(browser, tmp_path / "profile-dom", url, "--dump-dom")
    assert "Comparing 2 Runs" in dom, dom[-2000:]
    for name in (WARMUP, MEAN_TEACHER):
        assert name in dom, f"{name} is not on the compare page"
    for param in ("effective.adaptive.intensity", "effective.adaptive.cutmix", "ablation"):
        assert param in dom, f"param {param} is not on the compare page"

    shot = tmp_path / "compare.png"
    headless(browser, tmp_path / "profile-shot", url, f"--screenshot={shot}")
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "the screenshot is not a PNG"
    image = Image.open(BytesIO(data))
    assert image.size == (1400, 1000)
    # A blank or error page has a handful of colours; the rendered page has text and a plot.
    colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 500, f"{len(colours or [])} colours only"
