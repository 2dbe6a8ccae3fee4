"""`runtime.nproc` > 1: a training stage reruns its own command line under torchrun.

dvc.yaml's commands stay plain `imas train ...`, and `dvc exp run -S runtime.nproc=4` trains on
four processes: the command sees nproc 4 outside torchrun (no LOCAL_RANK), starts
`python -m torch.distributed.run --standalone --nproc_per_node=4 -m pipeline.cli train ...`
with the same arguments, and exits with its code. The processes torchrun starts see LOCAL_RANK
and train.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import typer

from pipeline.control.cluster import adopt_slurm_step
from pipeline.control.stopping import wait_forwarding_stops

# The folder holding `pipeline/`: the children import the code this process runs.
_SOURCE_ROOT = Path(__file__).resolve().parents[2]


def torchrun_command(nproc: int, argv: list[str]) -> list[str]:
    """The command line that runs `imas <argv>` on `nproc` local processes."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        "-m",
        "pipeline.cli",
        *argv,
    ]


def relaunch_under_torchrun(nproc: int, command: str) -> None:
    """Return if this process should train itself (nproc 1, a torchrun child, or a task of a
    multi-task srun step: pipeline/control/cluster.py); otherwise rerun this command line under
    torchrun on this machine and exit with its return code.

    `command` is the sub-command being run (`train`, `warmup`, `ablate`): the command line is
    taken from sys.argv, so the process must have been started as `imas <command> ...`.
    """
    adopt_slurm_step()  # a task of a multi-task srun step is one process of the job
    if nproc == 1 or "LOCAL_RANK" in os.environ:
        return
    argv = sys.argv[1:]
    if not argv or argv[0] != command:
        raise RuntimeError(
            f"runtime.nproc={nproc} reruns `imas {command} ...` under torchrun, which needs the "
            f"command started from a command line (sys.argv is {sys.argv!r}); run it as "
            f"`imas {command} ...`, or set runtime.nproc: 1 and start torchrun yourself"
        )
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(_SOURCE_ROOT), env.get("PYTHONPATH")]))
    print(f"{command}: runtime.nproc={nproc}, rerunning under torchrun", file=sys.stderr)
    # Its own session: a terminal's Ctrl-C reaches this process only, which passes on one
    # SIGTERM. In the terminal's group torchrun got the SIGINT and then that SIGTERM, and a
    # second signal inside its shutdown handler crashed it before the workers had saved.
    child = subprocess.Popen(torchrun_command(nproc, argv), env=env, start_new_session=True)
    code = wait_forwarding_stops(child)
    raise typer.Exit(code=code)
