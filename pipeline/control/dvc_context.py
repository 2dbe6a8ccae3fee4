"""What a stage command can learn about the DVC run that started it (checked with DVC 3.67).

`dvc exp run --queue` + `dvc queue start -j N`, and `dvc exp run --temp`, run an experiment in a
temporary git clone of the project: `<project>/.dvc/tmp/exps/tmpXXXX` (queue) or
`<project>/.dvc/tmp/exps/standalone/tmpXXXX` (--temp). The clone has a `.dvc` folder of its own
and is deleted once DVC has saved the experiment, so anything a stage writes beside "its" project
root outside DVC's outputs (the MLflow store) would be lost. For every experiment run DVC sets,
in the stage command's environment:

* `DVC_EXP_NAME`: the experiment's name, as `dvc exp show` lists it;
* `DVC_ROOT`: the project the experiment was started from, not the temporary clone (DVC's
  queue sets it "to point to the parent DVC repo root (and not an executor tempdir root)";
  dvc.org/doc/user-guide/env lists both as "automatically set by DVC").

`dvc queue start -j N` starts N worker processes (`dvc exp queue-worker`), each running one
experiment at a time. DVC's process manager records each in
`<project>/.dvc/tmp/exps/celery/dvc-exp-worker-<n>.json` ({"pid": ..., "returncode": null until
it exits}); a worker exits by itself about ten seconds after the queue runs dry. Environment
variables set on `dvc queue start` reach the stage commands (the workers inherit them).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

QUEUE_WORKERS = Path(".dvc", "tmp", "exps", "celery")


def _nearest_project(start: Path) -> Path | None:
    for folder in (start, *start.parents):
        if (folder / ".dvc").is_dir():
            return folder
    return None


def _experiment_origin(workspace: Path) -> Path | None:
    """The project whose experiment runs in `workspace`, if `workspace` is a temporary clone."""
    # DVC's word first; required to contain the clone, so a DVC_ROOT left over in a user's shell
    # or inherited from an outer project's stage cannot redirect an ordinary run.
    root = os.environ.get("DVC_ROOT")
    if os.environ.get("DVC_EXP_NAME") and root:
        origin = Path(root).resolve()
        if origin != workspace and workspace.is_relative_to(origin / ".dvc"):
            return origin
    # Without DVC's variables (`imas` run by hand inside the clone), the layout says the same.
    for folder in workspace.parents:
        if folder.name == ".dvc":
            return folder.parent
    return None


def project_root(start: Path | None = None) -> Path:
    """The DVC project a stage belongs to: the nearest folder at or above `start` (default: the
    cwd) holding `.dvc`, except that in a queued or `--temp` experiment's temporary clone it is
    the project the experiment was started from. `start` itself if no folder holds `.dvc`."""
    start = (start or Path.cwd()).resolve()
    here = _nearest_project(start)
    if here is None:
        return start
    return _experiment_origin(here) or here


def _alive(pid: object) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    if os.name == "nt":  # os.kill(pid, 0) would terminate it there; DVC writes no records anyway
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def queue_workers(project: Path) -> int:
    """How many `dvc queue start` workers of `project` are running now (0 if none)."""
    count = 0
    for record in (project / QUEUE_WORKERS).glob("dvc-exp-worker-*.json"):
        try:
            info = json.loads(record.read_text())
        except (OSError, ValueError):  # being rewritten, or removed by `dvc queue` cleanup
            continue
        if isinstance(info, dict) and info.get("returncode") is None and _alive(info.get("pid")):
            count += 1
    return count
