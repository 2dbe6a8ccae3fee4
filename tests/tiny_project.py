"""A tiny project folder whose first stages have run: the start of the stage-level tests that
interrupt, resume or distribute training."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from pipeline.cli import app


def project_through(
    work: Path, raw: dict[str, Any], stages: tuple[str, ...] = ("download", "split", "warmup")
) -> Path:
    """Write `raw` as work/params.yaml and run `stages` there, tracking to work/mlflow.db."""
    (work / "params.yaml").write_text(yaml.safe_dump(raw))
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(work)
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{work / 'mlflow.db'}")
        for stage in stages:
            result = CliRunner().invoke(app, [stage], catch_exceptions=False)
            assert result.exit_code == 0, result.output
    return work
