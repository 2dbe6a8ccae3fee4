"""`imas grid` on a throw-away DVC project of shell stages: it runs what is out of date in the
order the `--only` prefixes ask (a lane takes a later stage rather than wait for an upstream
one), records each finished stage in dvc.lock as `dvc repro` would, and lets a failure stop
only that stage's descendants."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.control.grid import run_grid, run_order

# first@K writes fK; second@K copies it to sK. Each appends its name to order.log, which is
# no stage's output, so the test can read the order they ran in.
DVC_YAML = """\
stages:
  first:
    matrix:
      k: [1, 2]
    cmd: sh -c 'test ${item.k} != "$FAIL" && echo ${item.k} > f${item.k}
      && echo first@${item.k} >> order.log'
    outs:
      - f${item.k}
  second:
    matrix:
      k: [1, 2]
    cmd: sh -c 'cat f${item.k} > s${item.k} && echo second@${item.k} >> order.log'
    deps:
      - f${item.k}
    outs:
      - s${item.k}
"""


def test_run_order_puts_the_prefixes_in_the_order_given() -> None:
    names = ["split@0-92", "split@1-92", "train@0-92-imas", "train@1-92-imas", "ablate@0-92-x"]
    assert run_order(names, []) == names
    assert run_order(names, ["ablate@0-", "split@1-", "train@1-"]) == [
        "ablate@0-92-x",
        "split@1-92",
        "train@1-92-imas",
    ]
    # A name matching two prefixes ranks by the first; one matching none is left out.
    assert run_order(names, ["train@1", "train@", "split@0"]) == [
        "train@1-92-imas",
        "train@0-92-imas",
        "split@0-92",
    ]


def _project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fail: str = "") -> Path:
    for cmd in (["git", "init", "-q"], ["dvc", "init", "-q"]):
        subprocess.run(cmd, cwd=tmp_path, check=True, capture_output=True)
    (tmp_path / "dvc.yaml").write_text(DVC_YAML)
    # The stage commands run from `dvc` on PATH with this interpreter's packages.
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAIL", fail)
    monkeypatch.setenv("DVC_NO_ANALYTICS", "1")
    return tmp_path


def _status(project: Path) -> str:
    done = subprocess.run(["dvc", "status"], cwd=project, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_grid_runs_in_prefix_order_and_records_every_stage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = _project(tmp_path, monkeypatch)
    # One lane: second@2 comes first but waits for first@2, so the lane takes that, then
    # second@2, and first@1 (first in dvc.yaml) last.
    assert run_grid(project / "dvc.yaml", jobs=1, only=["second@2", "first@2", "first@1"]) == 0
    assert (project / "order.log").read_text().split() == ["first@2", "second@2", "first@1"]
    lock = (project / "dvc.lock").read_text()
    assert "first@1:" in lock and "second@2:" in lock and "second@1:" not in lock
    # The rest, then nothing: what the grid committed is what `dvc status` calls up to date.
    assert run_grid(project / "dvc.yaml", jobs=2) == 0
    assert (project / "s1").read_text() == "1\n"
    assert "up to date" in _status(project)
    assert run_grid(project / "dvc.yaml", jobs=2) == 0
    assert sorted((project / "order.log").read_text().split()) == [
        "first@1",
        "first@2",
        "second@1",
        "second@2",
    ]


def test_a_failed_stage_skips_only_its_descendants(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = _project(tmp_path, monkeypatch, fail="2")
    assert run_grid(project / "dvc.yaml", jobs=2) == 2  # first@2 failed, second@2 skipped
    assert sorted((project / "order.log").read_text().split()) == ["first@1", "second@1"]
    lock = (project / "dvc.lock").read_text()
    assert "second@1:" in lock and "first@2:" not in lock and "second@2:" not in lock
    assert (project / ".grid-first-2.log").is_file()


def test_jobs_split_the_threads_unless_told_to_keep_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = _project(tmp_path, monkeypatch)
    (project / "dvc.yaml").write_text(
        "stages:\n  probe:\n    cmd: sh -c 'echo $IMAS_JOBS > jobs'\n    outs:\n      - jobs\n"
    )
    assert run_grid(project / "dvc.yaml", jobs=2) == 0
    assert (project / "jobs").read_text() == "2\n"  # two jobs: cores // 2 threads each
    (project / "jobs").unlink()
    assert run_grid(project / "dvc.yaml", jobs=2, split_threads=False) == 0
    assert (project / "jobs").read_text() == "1\n"  # as if alone: runtime.threads
