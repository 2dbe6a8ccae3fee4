"""End to end: the default `dvc repro` in a fresh clone, its wall time and peak memory."""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


def bench_repro(repo: Path, workdir: Path) -> dict[str, Any]:
    """Clone `repo`'s HEAD into `workdir` (replaced) and run `dvc repro` there.

    Peak memory is the largest resident set of any process the run started (the stages run
    one after another, so that is the run's peak), read from the kernel's child accounting.
    """
    if workdir.exists():
        shutil.rmtree(workdir)
    subprocess.run(["git", "clone", "--quiet", str(repo), str(workdir)], check=True)
    env = dict(os.environ)
    # The stage commands (`imas ...`) and dvc come from the interpreter running this.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    env["DVC_NO_ANALYTICS"] = "1"
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{workdir / 'mlflow.db'}"
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    start = time.perf_counter()
    subprocess.run(["dvc", "repro"], cwd=workdir, env=env, check=True)
    seconds = time.perf_counter() - start
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=workdir, capture_output=True, text=True
    ).stdout.strip()
    return {
        "commit": commit,
        "seconds": round(seconds, 1),
        "peak_rss_mib": round(max(peak_kib, before) / 1024),
    }
