"""An unreachable MLFLOW_TRACKING_URI fails every stage in seconds, naming the URI, before any
work: no output, no file of the project touched. (MLflow's client alone retries a refused
connection for minutes.)"""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest
from support.project import STAGES, build, snapshot
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.control.tracking import TrackingError, check_reachable


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build(tmp_path_factory.mktemp("project"))


def test_every_stage_fails_fast_naming_the_uri(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    uri = f"http://127.0.0.1:{closed_port()}"
    monkeypatch.chdir(project)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    before = snapshot(project)
    for stage, args in STAGES.items():
        start = time.monotonic()
        result = CliRunner().invoke(app, args)
        seconds = time.monotonic() - start
        assert result.exit_code == 1, (stage, result.output)
        assert f"error: MLflow tracking server {uri} (MLFLOW_TRACKING_URI) is unreachable" in (
            result.output
        ), (stage, result.output)
        assert "nothing was run" in result.output
        assert seconds < 10, (stage, seconds)
    assert snapshot(project) == before


def test_credentials_in_the_uri_are_not_shown() -> None:
    uri = f"http://alice:s3cret@127.0.0.1:{closed_port()}/mlflow"
    with pytest.raises(TrackingError) as err:
        check_reachable(uri, timeout=2)
    assert "s3cret" not in str(err.value) and "alice" not in str(err.value)
    assert "http://***@127.0.0.1:" in str(err.value)


def test_local_stores_need_no_server(tmp_path: Path) -> None:
    check_reachable(f"sqlite:///{tmp_path / 'mlflow.db'}")
    check_reachable(str(tmp_path / "mlruns"))
