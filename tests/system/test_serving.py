"""The registered model served by a real `mlflow models serve` (local env manager, loopback):
a real image posted to /invocations comes back as the mask `imas predict` writes for it."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from support.params import tiny_params
from typer.testing import CliRunner

from imas.model import build_model
from imas.train import FitResult
from pipeline.cli import app
from pipeline.config.params import load_params
from pipeline.control.tracking import stage_run
from pipeline.inference.mlflow_model import log_best_teacher

BIN = Path(sys.executable).parent
# 9 s from start to the first answer on this machine with its 2 cores busy at equal priority;
# the bound is wide because a starved start (the test under `nice` beside a running grid) took
# over 2 minutes.
READY_TIMEOUT = 300.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_ready(url: str, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the model server exited ({proc.returncode}):\n{log.read_text()}")
        with (
            contextlib.suppress(urllib.error.URLError, OSError),
            urllib.request.urlopen(f"{url}/ping", timeout=2) as resp,
        ):
            if resp.status == 200:
                return
        time.sleep(0.5)
    raise RuntimeError(f"no answer on {url}/ping in {READY_TIMEOUT:.0f} s:\n{log.read_text()}")


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM the server's process group (the CLI and the uvicorn it runs), then SIGKILL."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=20)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=20)


def post(url: str, body: dict) -> dict:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=60) as resp:
        return json.load(resp)


def register_tiny_model(work: Path) -> None:
    """A random tiny model, registered as the train stage does (models:/imas-embedded/1), and
    the same weights as a stage checkpoint (models/imas.pt)."""
    raw = tiny_params()
    raw["runtime"]["log_model"] = True
    (work / "params.yaml").write_text(yaml.safe_dump(raw))
    params = load_params(work / "params.yaml")
    data = work / "data"
    (data / "ImageSets/Segmentation").mkdir(parents=True)
    (data / "ImageSets/Segmentation/val.txt").write_text("v0\n")
    (data / "JPEGImages").mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(
        data / "JPEGImages/v0.jpg"
    )
    torch.manual_seed(0)
    net = build_model(params.model)
    for module in net.modules():  # spread the logits so the mask holds several classes
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.normal_(0, 0.5)
            module.running_var.uniform_(0.05, 0.5)
    state = net.state_dict()
    snapshot = {"student": state, "teacher": state}
    result = FitResult(best=snapshot, last=snapshot, best_epoch=0, best_miou=0.5)
    with stage_run("train", params, "imas") as run:
        assert log_best_teacher(run.run_id, params, params.train, result, 50.0, data) == (
            "imas-embedded",
            "1",
        )
    (work / "models").mkdir()
    model = params.model.model_dump(mode="json")
    torch.save({"model": model, "best": snapshot, "last": snapshot}, work / "models/imas.pt")


def test_the_served_model_returns_imas_predicts_mask(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking)
    register_tiny_model(tmp_path)
    # A real image file: 24 x 40, not square, so a transposed mask cannot pass.
    ys, xs = np.mgrid[0:24, 0:40]
    pixels = np.stack([xs * 6, ys * 10, (xs * ys) % 256], axis=-1).astype(np.uint8)
    Image.fromarray(pixels).save(tmp_path / "photo.png")
    for source in (["--model", "models:/imas-embedded/1"], ["--checkpoint", "models/imas.pt"]):
        out = "by_model" if source[0] == "--model" else "by_checkpoint"
        args = ["predict", "photo.png", "--out", out, "--no-overlays", *source]
        result = CliRunner().invoke(app, args, catch_exceptions=False)
        assert result.exit_code == 0, result.output
    mask = np.asarray(Image.open(tmp_path / "by_model/photo.png"))
    assert np.array_equal(mask, np.asarray(Image.open(tmp_path / "by_checkpoint/photo.png")))
    assert len(np.unique(mask)) > 1  # a mask of one class would compare too easily

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [
        str(BIN / "mlflow"), "models", "serve", "-m", "models:/imas-embedded/1",
        "--env-manager", "local", "--host", "127.0.0.1", "--port", str(port),
    ]  # fmt: skip
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking, "MLFLOW_DISABLE_TELEMETRY": "true"}
    log = tmp_path / "serve.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            cmd, cwd=tmp_path, env=env, stdout=sink, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        wait_ready(url, proc, log)
        image = np.asarray(Image.open(tmp_path / "photo.png").convert("RGB"))
        served = post(f"{url}/invocations", {"inputs": image.transpose(2, 0, 1)[None].tolist()})
        assert np.array_equal(np.asarray(served["predictions"]), mask[None])
        # The signature holds: three channels, or the request is refused.
        with pytest.raises(urllib.error.HTTPError) as refused:
            post(f"{url}/invocations", {"inputs": [[[[0, 1]]]]})
        assert refused.value.code == 400
    finally:
        stop(proc)
