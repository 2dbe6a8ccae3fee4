"""MLflow tracking for the stages: the only module that imports mlflow, besides the MLflow
model of pipeline/inference/.

Default tracking is embedded: a sqlite database `mlflow.db` at the root of the DVC project that
holds the working directory (so the main pipeline and benchmarks/ssl share one store), artifacts
under `mlruns/`. `MLFLOW_TRACKING_URI` points the same code at a server. Runs are grouped in one
experiment per dataset (or `runtime.experiment`) and named `<stage>-<method>-<labeled>-s<seed>`.

Training runs also log `effective.*`: the training section the run really used, under one prefix
for warmup, train and ablate runs alike, with the adaptive switches as `fit` applies them. Raw
params alone mislead in MLflow's compare view: a mean-teacher run shows `train.adaptive.*` on, and
a warmup run shows the `train` section it never used.

Queued and `--temp` DVC experiments run in a temporary clone of the project that has a `.dvc` folder
of its own; their runs still go to the store of the project they were started from
(`pipeline/control/dvc_context.py`), tagged `dvc_experiment` with the name `dvc exp show` lists.
Stages that set torch threads also log `runtime.threads_effective` and `runtime.parallel_jobs`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import typer

from imas.config import TEACHER_STUDENT_ONLY, TrainConfig
from pipeline.config.params import Params, flatten
from pipeline.control.dvc_context import project_root
from pipeline.control.threads import applied

# Bounded so a batch never exceeds MLflow's per-request limit of 100 params.
_PARAM_BATCH = 100


def store_root(start: Path | None = None) -> Path:
    """The nearest folder at or above `start` (default: cwd) holding `.dvc`, else `start`; in a
    queued or `--temp` experiment's temporary clone, the project that started the experiment."""
    return project_root(start)


def default_store_uri() -> str:
    """The embedded store: `mlflow.db` beside the DVC project's root."""
    return f"sqlite:///{store_root() / 'mlflow.db'}"


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or default_store_uri()


# Seconds to wait for a tracking server before the stage gives up; MLflow's own client retries
# a refused connection for minutes (7 retries, exponential backoff) before it fails.
PROBE_TIMEOUT = 5.0


class TrackingError(RuntimeError):
    """The tracking store cannot be reached; the message names the URI (credentials masked)."""


def _shown(uri: str) -> str:
    """The URI for messages, with any user:password@ part masked."""
    parts = urlsplit(uri)
    if "@" not in parts.netloc:
        return uri
    return parts._replace(netloc="***@" + parts.netloc.rsplit("@", 1)[1]).geturl()


def check_reachable(uri: str, timeout: float = PROBE_TIMEOUT) -> None:
    """Fail fast, naming the URI, when an http(s) tracking server does not answer.

    Any HTTP answer counts as reachable (an auth proxy's 401 too): MLflow then reports what it
    finds. Other stores (sqlite, files) are local and need no probe.
    """
    parts = urlsplit(uri)
    if parts.scheme not in ("http", "https"):
        return
    host = parts.netloc.rsplit("@", 1)[-1]  # credentials are not needed to see a server answer
    probe = parts._replace(netloc=host, path=parts.path.rstrip("/") + "/health", query="")
    try:
        with urllib.request.urlopen(probe.geturl(), timeout=timeout):
            return
    except urllib.error.HTTPError:
        return
    except (urllib.error.URLError, OSError, ValueError) as err:
        reason = getattr(err, "reason", err)
        raise TrackingError(
            f"MLflow tracking server {_shown(uri)} (MLFLOW_TRACKING_URI) is unreachable: "
            f"{reason}. Start it, or unset MLFLOW_TRACKING_URI to log to the local mlflow.db; "
            "nothing was run"
        ) from None


class Terminated(KeyboardInterrupt):
    """SIGTERM during a stage's run: unwinds like Ctrl-C so the run is closed as KILLED."""


@contextmanager
def _sigterm_unwinds() -> Iterator[None]:
    """Turn SIGTERM into `Terminated` while the run is open, where it would otherwise end the
    process on the spot and leave the run RUNNING. A handler someone else installed (the
    training stages' stop flag) is left alone."""
    main = threading.current_thread() is threading.main_thread()
    if not main or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return

    def raise_terminated(_signum: int, _frame: object) -> None:
        raise Terminated("SIGTERM")

    signal.signal(signal.SIGTERM, raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


class Tracker:
    """What a stage may do with its run: metrics, artifacts, tags."""

    def __init__(self, mlflow_module: Any, run_id: str) -> None:
        self._mlflow = mlflow_module
        self.run_id = run_id

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        clean = {k: float(v) for k, v in metrics.items()}
        self._mlflow.log_metrics(clean, step=step)

    def log_artifact(self, path: Path | str, folder: str | None = None) -> None:
        self._mlflow.log_artifact(str(path), artifact_path=folder)

    def set_tags(self, tags: dict[str, Any]) -> None:
        self._mlflow.set_tags({k: str(v) for k, v in tags.items()})


class NullTracker(Tracker):
    """The run of a process that is not rank 0: it logs nothing."""

    def __init__(self) -> None:
        super().__init__(None, "")

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        pass

    def log_artifact(self, path: Path | str, folder: str | None = None) -> None:
        pass

    def set_tags(self, tags: dict[str, Any]) -> None:
        pass


def effective_params(cfg: TrainConfig) -> dict[str, Any]:
    """`effective.*` params of a training run: `cfg` as `imas.train.fit` applies it.

    Supervised runs have no teacher, so the teacher–student knobs are null and every adaptive
    switch is off; the mean-teacher baseline has the switches of `effective_adaptive()`.
    """
    data = cfg.model_dump(mode="json")
    if data["ohem"] is None:  # same keys with OHEM off as on, for the compare view
        data["ohem"] = {"thresh": None, "min_kept": None}
    if cfg.method == "supervised":
        data.update(dict.fromkeys(TEACHER_STUDENT_ONLY))
        data["adaptive"] = {
            "intensity": None,
            "cutmix": False,
            "cutmix_trigger": None,
            "cutmix_prob": None,
            "cutmix_pairing": None,
            "loss_weight": False,
            "scaled_magnitude": False,
            "signal": None,
        }
    else:
        data["adaptive"] = cfg.effective_adaptive().model_dump(mode="json")
    return flatten(data, prefix="effective.")


def _experiment_id(mlflow: Any, name: str, artifact_location: str | None) -> str:
    found = mlflow.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    try:
        return mlflow.create_experiment(
            name,
            artifact_location=artifact_location,
            # MLflow 3 opens untagged experiments in its GenAI view; this marks model training.
            tags={"mlflow.experimentKind": "custom_model_development"},
        )
    except mlflow.MlflowException:
        # A parallel job (a tracking server has no store lock) created it since the lookup.
        found = mlflow.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


@contextmanager
def _store_lock(own_store: bool) -> Iterator[None]:
    """Exclusive while a stage opens the default sqlite store and finds its experiment.

    Parallel queue jobs open one store; two processes creating a fresh `mlflow.db` at once ran
    MLflow's schema migrations over each other ("duplicate column name: step", "table
    _alembic_tmp_metrics already exists"), and two creating one experiment hit its UNIQUE name.
    Once both exist, concurrent logging to the store worked (sqlite serialises the writes).
    """
    if not own_store:
        yield
        return
    try:
        import fcntl
    except ImportError:  # Windows: no advisory file locks in the stdlib; run jobs one at a time
        yield
        return
    with (store_root() / "mlflow.db.lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def registry_lock() -> AbstractContextManager[None]:
    """`_store_lock` for registering a model: parallel queue jobs registering one name in the
    default store take turns; another tracking URI needs no lock (a server serialises)."""
    import mlflow

    return _store_lock(mlflow.get_tracking_uri() == default_store_uri())


def _is_main() -> bool:
    """Rank 0 or the only process. A stage that never imported torch.distributed runs no process
    group (download, split, report), and importing torch only to learn that costs seconds."""
    if "torch.distributed" not in sys.modules:
        return True
    from imas import distributed

    return distributed.is_main()


@contextmanager
def stage_run(
    stage: str,
    params: Params,
    method: str,
    param_overrides: dict[str, Any] | None = None,
    *,
    train_cfg: TrainConfig | None = None,
    **tags: Any,
) -> Iterator[Tracker]:
    """Open an MLflow run for one stage with flattened params and identifying tags.

    `param_overrides` replaces dotted params, so an ablation logs the switches it really ran.
    A training stage passes the `train_cfg` it trains with, logged as `effective.*`.

    An exception inside the block marks the run FAILED (MLflow's own context manager), and
    Ctrl-C, SIGTERM or a training stage's `Interrupted` (KeyboardInterrupts) mark it KILLED, so
    a stage never stays "running". An unreachable tracking server fails here, in seconds and
    naming the URI, before the stage does any work: "error: ..." and exit code 1. In a process
    group only rank 0 opens a run (and probes the server); the other ranks get a tracker that
    logs nothing.
    """
    if not _is_main():
        yield NullTracker()
        return
    try:
        check_reachable(tracking_uri())
    except TrackingError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1) from None
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    import mlflow

    # Beside the default store, not under whichever folder first created the experiment. Read
    # before set_tracking_uri, which exports MLFLOW_TRACKING_URI itself.
    own_store = not os.environ.get("MLFLOW_TRACKING_URI")
    location = (store_root() / "mlruns").as_uri() if own_store else None
    mlflow.set_tracking_uri(tracking_uri())
    name = params.runtime.experiment or f"imas-{params.dataset}"
    with _store_lock(own_store):
        experiment = _experiment_id(mlflow, name, location)
    run_name = f"{stage}-{method}-{params.labeled}-s{params.seed}"
    all_tags = {
        "stage": stage,
        "method": method,
        "labeled": params.labeled,
        "seed": params.seed,
        "dataset": params.dataset,
        # Results on VOC compare only within a split family (classic vs blended labels).
        "split_family": params.data.split.family,
        "split_source": params.data.split.source,
        **tags,
    }
    # SPEC §7: a ResNet on torchvision's 7×7 stem is not the paper's network; say so on the run.
    deviation = params.model.paper_deviation()
    if deviation is not None:
        all_tags["deviation"] = deviation
    commit = _git_commit()
    if commit:
        all_tags["mlflow.source.git.commit"] = commit
    # Set by DVC on every `dvc exp run`: pairs the run with its row in `dvc exp show`.
    if os.environ.get("DVC_EXP_NAME"):
        all_tags["dvc_experiment"] = os.environ["DVC_EXP_NAME"]
    # Strings only: the sqlite store accepts an int tag, but a tracking server's REST client
    # fails on one before the request is even sent.
    str_tags = {k: str(v) for k, v in all_tags.items()}
    with (
        _sigterm_unwinds(),
        mlflow.start_run(experiment_id=experiment, run_name=run_name, tags=str_tags) as run,
    ):
        flat = flatten(params.model_dump(mode="json"))
        flat.update(param_overrides or {})
        flat["method"] = method
        if train_cfg is not None:
            flat.update(effective_params(train_cfg))
        plan = applied()
        if plan is not None:
            flat["runtime.threads_effective"] = plan.threads
            flat["runtime.parallel_jobs"] = plan.jobs
        items = [(k, "null" if v is None else v) for k, v in flat.items()]
        try:
            for i in range(0, len(items), _PARAM_BATCH):
                mlflow.log_params(dict(items[i : i + _PARAM_BATCH]))
            yield Tracker(mlflow, run.info.run_id)
        except KeyboardInterrupt:
            # Ended here, start_run's exit finds no active run and does not mark it FAILED.
            mlflow.end_run(status="KILLED")
            raise
