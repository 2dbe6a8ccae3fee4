"""`imas grid`: run a DVC benchmark's out-of-date stages several at a time, then record each in
dvc.lock as `dvc repro` would have.

`dvc repro` runs one stage at a time and holds the repository lock throughout, so a grid of
dozens of training runs cannot use both cores of a small machine. Here one `torch` thread per
job, two jobs side by side, finish the same stages sooner (measured: two 1-thread jobs beat one
2-thread job on 2 cores). Each stage's command is the one in dvc.yaml, run from the stage's
folder; when it exits 0 the stage is committed (`dvc commit`), so dvc.lock holds exactly what
`dvc repro` would have written, and a later `dvc repro` or `dvc status` sees it up to date. A
failed stage stops nothing else but its own descendants; the command exits 1 at the end.
Stages are taken in the order dvc.yaml lists them, each once its upstream stages are done, so
an interrupted grid resumes where it stopped (finished stages are up to date). With `--only`,
the prefixes' order comes first: `--only ablate@0- --only train@1-` starts seed 0's ablations
before seed 1's runs, yet a lane that would wait for an upstream stage takes a later one.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import typer


def run_order(names: Sequence[str], only: Sequence[str]) -> list[str]:
    """`names` (in dvc.yaml order) that start with one of `only` (all of them without it),
    ordered by the first prefix they match, dvc.yaml order within a prefix."""
    if not only:
        return list(names)

    def rank(name: str) -> int | None:
        return next((i for i, prefix in enumerate(only) if name.startswith(prefix)), None)

    ranked = [(r, i, name) for i, name in enumerate(names) if (r := rank(name)) is not None]
    return [name for _, _, name in sorted(ranked)]


def _pending(repo: Any, dvcfile: Path, only: Sequence[str]) -> list[Any]:
    """Stages of `dvcfile` that are out of date (changed deps, params, command or missing
    outputs), in `run_order`."""
    stages = {s.name: s for s in repo.index.stages if Path(s.path).resolve() == dvcfile.resolve()}
    return [stages[name] for name in run_order(list(stages), only) if stages[name].changed()]


def _upstream(repo: Any, stage: Any) -> list[Any]:
    """Every stage `stage` depends on, transitively."""
    import networkx as nx

    return list(nx.descendants(repo.index.graph, stage))


def _commit(root: Path, addressing: str, env: dict[str, str]) -> None:
    # The repository lock is held only while committing, so retry while another commit runs.
    for attempt in range(60):
        done = subprocess.run(
            ["dvc", "commit", "--force", addressing], cwd=root, env=env, capture_output=True
        )
        if done.returncode == 0:
            return
        if b"lock" not in done.stderr.lower() or attempt == 59:
            sys.stderr.write(done.stderr.decode(errors="replace"))
            raise RuntimeError(f"dvc commit {addressing} failed")
        time.sleep(2)


def run_grid(
    dvcfile: Path,
    jobs: int,
    only: Sequence[str] = (),
    dry: bool = False,
    split_threads: bool = True,
) -> int:
    """Run the pending stages of `dvcfile`, `jobs` at a time; returns the number that failed.

    `split_threads`: each job gets cores // jobs torch threads (pipeline/control/threads.py
    reads IMAS_JOBS); without it each takes `runtime.threads` as when run alone, so its
    numbers are those of `dvc repro` (thread counts change the last digits), and the jobs
    share the cores."""
    from dvc.repo import Repo

    root = Path(Repo.find_root(str(dvcfile.parent)))
    with Repo(str(root)) as repo, repo.lock:
        pending = _pending(repo, dvcfile, only)

        # Addressed from the repository root (`path/dvc.yaml:name`), where `dvc commit` runs.
        def address(stage: Any) -> str:
            return f"{Path(stage.path).resolve().relative_to(root.resolve())}:{stage.name}"

        needs = {address(s): {address(u) for u in _upstream(repo, s)} for s in pending}
        cmds = {address(s): (s.cmd, Path(s.wdir)) for s in pending}
    names = list(cmds)
    print(f"{len(names)} stage(s) to run, {jobs} at a time", flush=True)
    if dry:
        for name in names:
            print(f"  {name}")
        return 0
    env = {**os.environ, "IMAS_JOBS": str(jobs if split_threads else 1)}
    waiting = list(names)
    running: dict[str, tuple[subprocess.Popen, Any, float]] = {}
    failed: set[str] = set()
    while waiting or running:
        for name in list(waiting):
            if len(running) >= jobs:
                break
            blocked = needs[name] & set(waiting + list(running))
            if needs[name] & failed:
                waiting.remove(name)
                failed.add(name)
                print(f"skipped {name}: an upstream stage failed", flush=True)
            elif not blocked:
                waiting.remove(name)
                cmd, wdir = cmds[name]
                # Open while the stage runs; closed when it is reaped below.
                log_name = f".grid-{name.split(':')[-1].replace('@', '-')}.log"
                log = open(wdir / log_name, "w")  # noqa: SIM115
                print(f"start {name}", flush=True)
                proc = subprocess.Popen(cmd, shell=True, cwd=wdir, env=env, stdout=log,
                                        stderr=subprocess.STDOUT)  # fmt: skip
                running[name] = (proc, log, time.perf_counter())
        for name, (proc, log, start) in list(running.items()):
            if proc.poll() is None:
                continue
            log.close()
            del running[name]
            minutes = (time.perf_counter() - start) / 60
            if proc.returncode == 0:
                _commit(root, name, env)
                print(f"done {name} ({minutes:.1f} min)", flush=True)
            else:
                failed.add(name)
                print(f"FAILED {name} (exit {proc.returncode}; log {log.name})", flush=True)
        time.sleep(1)
    return len(failed)


def command(
    dvcfile: Annotated[Path, typer.Argument(help="the benchmark's dvc.yaml")],
    jobs: Annotated[int, typer.Option(min=1, help="stages run side by side")] = 2,
    only: Annotated[
        list[str] | None,
        typer.Option(
            help="run only stages whose name starts with this; repeated, the first go first"
        ),
    ] = None,
    dry: Annotated[bool, typer.Option(help="list the stages that would run")] = False,
    split_threads: Annotated[
        bool,
        typer.Option(
            help="give each job cores // JOBS torch threads; --no-split-threads: runtime.threads "
            "as when run alone (dvc repro's numbers exactly; the jobs share the cores)"
        ),
    ] = True,
) -> None:
    """Run a DVC benchmark's out-of-date stages JOBS at a time and record them in dvc.lock."""
    if not dvcfile.is_file():
        typer.echo(f"error: {dvcfile}: no such dvc.yaml", err=True)
        raise typer.Exit(code=2)
    failed = run_grid(dvcfile, jobs, only or (), dry, split_threads)
    if failed:
        typer.echo(f"error: {failed} stage(s) failed or were skipped", err=True)
        raise typer.Exit(code=1)
