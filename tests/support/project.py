"""A tiny project on disk with the outputs of some or all stages: the start of the tests that
check what a failing stage leaves behind (bytes and modification times of every file, before
and after) and of those that interrupt, resume or distribute training."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from pipeline.cli import app
from support.params import tiny_params

ROOT = Path(__file__).resolve().parents[2]
# Every stage with the arguments that give the report its inputs (see tests/stage/test_cli.py),
# named as dvc.yaml's: the evaluate stage scores SupOnly, the `supervised` ablation's checkpoint.
STAGES = {
    "download": ["download"],
    "split": ["split"],
    "warmup": ["warmup"],
    "train": ["train", "--hardness", "metrics/train_hardness.csv"],
    "ablate@supervised": ["ablate", "supervised"],
    "ablate@mean_teacher": ["ablate", "mean_teacher"],
    "evaluate": ["evaluate"],
    "report": ["report"],
}


def build(work: Path, stages: list[str] | None = None, raw: dict[str, Any] | None = None) -> Path:
    """`raw` params (default: the tiny ones) in `work` and the outputs of `stages` (default
    all), run in process."""
    if raw is None:
        raw = tiny_params()
    (work / "params.yaml").write_text(yaml.safe_dump(raw))
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(work)
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{work / 'mlflow.db'}")
        for stage in stages or list(STAGES):
            result = CliRunner().invoke(app, STAGES[stage], catch_exceptions=False)
            assert result.exit_code == 0, result.output
    return work


def snapshot(work: Path, skip: tuple[str, ...] = ()) -> dict[str, tuple[str, int]]:
    """sha256 and mtime (ns) of every file and folder under `work` but `skip` (relative
    paths). A folder's mtime changes when an entry is added or removed, so even a temporary
    file created and deleted again shows."""
    return {
        rel: (
            hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "folder",
            p.stat().st_mtime_ns,
        )
        for p in sorted(work.rglob("*"))
        if (rel := p.relative_to(work).as_posix()) not in skip
    }
