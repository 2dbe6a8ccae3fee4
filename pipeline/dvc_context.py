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
"""

from __future__ import annotations

import os
from pathlib import Path


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
