"""Checkpoints the stages write and read: atomic, canonical bytes, never non-finite; and the
resume checkpoint beside each training output."""

from __future__ import annotations

import sys
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from imas.finite import NonFiniteError, nonfinite_keys
from pipeline.control.outputs import atomic_path


def canonical(obj: Any) -> Any:
    """A copy of a nested payload (dicts, lists, tuples) whose bytes under pickle depend on its
    values only: every string interned, every container new, tensors and other leaves as they are.

    pickle writes a second occurrence of the same object as a back-reference, so two equal
    payloads built differently pickle differently: after a resume, the best snapshot's keys are
    strings read from the resume file where an uninterrupted run has the interpreter's literals,
    and the checkpoint's bytes (and its DVC hash) changed although every value was the same.
    A state dict's `_metadata` (module versions) is kept, canonical too.
    """
    if type(obj) is str:
        return sys.intern(obj)
    if isinstance(obj, Mapping):
        out: dict[Any, Any] = OrderedDict() if isinstance(obj, OrderedDict) else {}
        for key, value in obj.items():
            out[canonical(key)] = canonical(value)
        metadata = getattr(obj, "_metadata", None)
        if metadata is not None:
            out._metadata = canonical(metadata)  # type: ignore[attr-defined]
        return out
    if type(obj) is list:
        return [canonical(value) for value in obj]
    if type(obj) is tuple:
        return tuple(canonical(value) for value in obj)
    return obj


def save_checkpoint(path: Path | str, payload: dict[str, Any]) -> None:
    """Write `payload` atomically; refuse (NonFiniteError, nothing written) if any tensor holds
    NaN or Inf, so a diverged run never replaces a good checkpoint or resume state."""
    bad = nonfinite_keys(payload)
    if bad:
        more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
        raise NonFiniteError(
            f"{path}: not written, non-finite values in {', '.join(bad[:5])}{more}; the "
            "previous file (if any) is kept"
        )
    # Through a file object: given a path, torch.save names the archive's inner folder after the
    # (random) temp file, so equal weights gave different bytes and DVC hashes on every run.
    # canonical: equal values give equal bytes, however the payload was built (a resumed run's
    # best snapshot was read back from the resume file).
    with atomic_path(path) as tmp, tmp.open("wb") as fh:
        torch.save(canonical(payload), fh)


def load_checkpoint(path: Path | str) -> dict[str, Any]:
    """Load a checkpoint written by a stage; tensors and plain types only (weights_only)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist (run its stage first)")
    return torch.load(path, map_location="cpu", weights_only=True)


class ResumeError(RuntimeError):
    """A resume checkpoint exists but cannot be used; the message names the file."""


def weight_snapshots(payload: Mapping[str, Any]) -> dict[str, dict[str, Any]] | None:
    """The networks a training checkpoint holds, by snapshot (`best`, `last`) and network
    (`student`, `teacher`: None for a supervised run). A stage's output holds both snapshots; a
    `--weights` file (the protocol benchmark's) the last ones only. None for anything else."""
    if "best" in payload and "last" in payload:
        return {"best": payload["best"], "last": payload["last"]}
    if "student" in payload:
        return {"last": {"student": payload["student"], "teacher": payload.get("teacher")}}
    return None


def resume_path(out: Path | str) -> Path:
    """Where a stage writing `out` keeps its resume checkpoint: `models/imas.pt` →
    `models/imas.resume.pt`, beside the output and outside what DVC tracks."""
    out = Path(out)
    return out.with_name(f"{out.stem}.resume{out.suffix or '.pt'}")


def remove_resume_temps(path: Path | str) -> None:
    """Delete the temporaries of `path` that a process killed while writing it left behind
    (`atomic_path` names them `.<name>.<random>.tmp`)."""
    path = Path(path)
    for tmp in path.parent.glob(f".{path.name}.*.tmp"):
        tmp.unlink(missing_ok=True)


def save_resume(path: Path | str, run: str, state: dict[str, Any]) -> None:
    """Write `fit`'s resume state, tagged with the run it belongs to, atomically: a crash while
    writing leaves the previous resume checkpoint in place."""
    save_checkpoint(path, {"run": run, "state": state})


def load_resume(path: Path | str, run: str) -> dict[str, Any] | None:
    """The resume state at `path` if it belongs to `run`; None if there is no file, or it is
    from a run with other params or inputs (then the caller starts over and replaces it).

    A file that cannot be read is an error, never silently ignored or overwritten: it names the
    file and says what to do.
    """
    path = Path(path)
    if not path.exists():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated zip, bad pickle, foreign types: all mean unusable
        raise ResumeError(
            f"resume checkpoint {path} is unreadable ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else 'no detail'}); delete it to train "
            "from the start"
        ) from err
    if not isinstance(payload, dict) or not {"run", "state"} <= payload.keys():
        raise ResumeError(
            f"resume checkpoint {path} is not a resume checkpoint (no run/state); delete it to "
            "train from the start"
        )
    if payload["run"] != run:
        return None
    return payload["state"]
