"""DVC projects in tests: a throwaway copy of the repository to run `dvc` in, what `dvc stage
list` names in a benchmark project, and what its grid params say it should."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from pipeline.config.sections import BenchmarkParams

ROOT = Path(__file__).resolve().parents[2]


def listed_stages(project: Path) -> list[str]:
    """`dvc stage list --name-only` in `project` (read-only: it takes no repository lock)."""
    # The venv's own dvc when the venv is not on PATH (pytest run as .venv/bin/pytest).
    dvc = shutil.which("dvc") or shutil.which("dvc", path=str(Path(sys.executable).parent))
    assert dvc is not None, "dvc is a dependency of this project: `make setup` installs it"
    cmd = [dvc, "stage", "list", "--name-only"]
    out = subprocess.run(cmd, cwd=project, capture_output=True, text=True, check=True)
    return out.stdout.split()


def grid_stages(grid: BenchmarkParams) -> list[str]:
    """benchmarks/protocol's matrix stages: download and pretrain once, then split and warmup
    per (seed, count) cell, one train run per cell and method, and one ablate run per cell at
    each of `ablation_labeled` and ablation. Matrix keys put the seed first, so one seed's runs
    can be selected by prefix (`--only train@0-`)."""
    cells = [f"{s}-{n}" for s in grid.seeds for n in grid.labeled]
    names = ["download", "pretrain"]
    names += [f"split@{c}" for c in cells] + [f"warmup@{c}" for c in cells]
    names += [f"train@{c}-{m}" for c in cells for m in grid.methods]
    ablated = [f"{s}-{n}" for s in grid.seeds for n in grid.ablation_labeled]
    return names + [f"ablate@{c}-{a}" for c in ablated for a in grid.ablations]


# Outputs and local state at the top level; nothing the pipeline's inputs need.
TOP_SKIP = {".git", ".venv", "data", "models", "metrics", "mlflow.db", "mlruns",
            ".pytest_cache", ".ruff_cache"}  # fmt: skip


def ignore(folder: str, names: list[str]) -> list[str]:
    here = Path(folder)
    skip = {"__pycache__"}
    if here == ROOT:
        skip |= TOP_SKIP
    if here == ROOT / ".dvc":
        skip |= {"cache", "tmp"}
    if here.parent == ROOT / "benchmarks":  # ssl, paper: their data and checkpoints
        skip |= {"data", "models"}
    return [n for n in names if n in skip or n.endswith(".egg-info")]


def run(cmd: list[str], cwd: Path, env: dict) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
        )
    return proc.stdout + proc.stderr
