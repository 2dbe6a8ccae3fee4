"""What `dvc stage list` names in a benchmark project, and what its grid params say it should."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from pipeline.params import BenchmarkParams


def listed_stages(project: Path) -> list[str]:
    dvc = shutil.which("dvc")
    if dvc is None:
        pytest.skip("dvc is not on PATH")
    cmd = [dvc, "stage", "list", "--name-only"]
    out = subprocess.run(cmd, cwd=project, capture_output=True, text=True, check=True)
    return out.stdout.split()


def grid_stages(grid: BenchmarkParams) -> list[str]:
    """download, then split and warmup per (count, seed) cell, then one train run per method."""
    cells = [f"{n}-{s}" for n in grid.labeled for s in grid.seeds]
    names = ["download", *(f"split@{c}" for c in cells), *(f"warmup@{c}" for c in cells)]
    return names + [f"train@{c}-{m}" for c in cells for m in grid.methods]
