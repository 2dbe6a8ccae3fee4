"""Every signal a stage handles, in one place: a training stage stops early on SIGINT/SIGTERM
with a resume checkpoint and exit code 128 + signal (130, 143), on a NaN or Inf with an error
naming the iteration (either way no output is written, and the MLflow run is closed as KILLED
or FAILED by `tracking.stage_run`); a stage relaunched under torchrun passes the stop on.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer

from imas.finite import NonFiniteError
from imas.train import Interrupted

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextmanager
def training_stops(stage: str, resume_file: Path) -> Iterator[Callable[[], bool]]:
    """Yield `fit`'s `should_stop`: true once SIGINT or SIGTERM arrived.

    The first signal only sets the flag, so `fit` stops at the next iteration with a resume
    checkpoint; the handlers that were there before come back at once, so a second Ctrl-C
    (KeyboardInterrupt) or SIGTERM (termination) stops the process without waiting. Not under
    torchrun: a worker there may get the stop twice (a torchrun started by hand shares the
    terminal's group, so Ctrl-C reaches the worker and torchrun adds its SIGTERM), and the
    second must not cut the save short (torchrun kills workers that take longer than 30 s).
    `Interrupted` becomes exit code 128 + signal and `NonFiniteError` exit code 1, each with a
    one-line message on stderr instead of a traceback.
    """
    received: list[int] = []
    previous: dict[int, Any] = {}

    under_torchrun = "LOCAL_RANK" in os.environ

    def handler(signum: int, _frame: Any) -> None:
        received.append(signum)
        if not under_torchrun:
            for sig, old in previous.items():
                signal.signal(sig, old)

    # Python lets only the main thread install handlers (an in-process caller may be another).
    if threading.current_thread() is threading.main_thread():
        for sig in STOP_SIGNALS:
            # None: a handler installed outside Python, which cannot be reinstalled from here.
            old = signal.getsignal(sig)
            previous[sig] = signal.SIG_DFL if old is None else old
            signal.signal(sig, handler)
    try:
        yield lambda: bool(received)
    except Interrupted as stop:
        signum = received[0] if received else signal.SIGINT
        kept = (
            f"resume checkpoint {resume_file} written; rerun the stage to continue"
            if resume_file.exists()
            else "no iteration had run, so there is nothing to resume"
        )
        typer.echo(
            f"{stage}: stopped by {signal.Signals(signum).name} at iteration {stop.step}; {kept}",
            err=True,
        )
        raise typer.Exit(128 + signum) from None
    except NonFiniteError as err:
        kept = (
            f"the last good resume checkpoint {resume_file} is kept"
            if resume_file.exists()
            else "no resume checkpoint exists (runtime.checkpoint_every: 0)"
        )
        typer.echo(f"error: {stage}: {err}; {kept}", err=True)
        raise typer.Exit(1) from None
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


def wait_forwarding_stops(child: subprocess.Popen) -> int:
    """Wait for torchrun; a SIGTERM or SIGINT meanwhile is passed on to it as SIGTERM, which it
    forwards to the workers (they stop with a resume checkpoint), and this process then exits
    with 128 + the signal it got. Without this, SIGTERM would end this process alone and leave
    torchrun training, and Ctrl-C would make subprocess.run SIGKILL torchrun mid-save."""
    got: list[int] = []

    def forward(signum: int, _frame: object) -> None:
        # Once: torchrun turns it into a SIGTERM to each worker; a repeat would interrupt its
        # own shutdown.
        if not got:
            child.send_signal(signal.SIGTERM)
        got.append(signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        code = child.wait()
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
    return 128 + got[0] if got else code
