"""Shared body of the warmup, train and ablate stages: one call into `imas.train.fit`."""

from __future__ import annotations

import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

from imas import distributed
from imas.config import TrainConfig
from imas.evaluate import evaluate
from imas.model import build_model
from imas.train import FitResult, Hooks, Plan, fit, resolve_iters_per_epoch
from imas.weights import load_pretrained
from pipeline.config.params import Params
from pipeline.control.launch import relaunch_under_torchrun
from pipeline.control.outputs import write_hardness, write_history, write_json
from pipeline.control.runtime import setup_runtime
from pipeline.control.stopping import training_stops
from pipeline.control.tracking import Tracker, stage_run
from pipeline.inference.mlflow_model import log_best_teacher
from pipeline.training.checkpoints import (
    ResumeError,
    load_checkpoint,
    load_resume,
    remove_resume_temps,
    resume_path,
    save_checkpoint,
    save_resume,
)
from pipeline.training.loaders import input_normalization, train_loaders, val_loader
from pipeline.training.scoring import premise_hook, score_test, write_premise


def _epoch_logger(run: Tracker):
    """`fit`'s log callback: epoch mIoU in points (0–100), as in the history CSV and summary."""

    def log(metrics: dict[str, float], step: int) -> None:
        scaled = {k: 100 * v if k.startswith("epoch/miou_") else v for k, v in metrics.items()}
        run.log_metrics(scaled, step)

    return log


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _run_identity(
    stage: str, params: Params, cfg: TrainConfig, split: Path, init: Path | None
) -> str:
    """What a resume state must have been trained with: every param but `runtime` (how to run),
    the section trained, the split lists, the init checkpoint, and the number of processes and
    the BatchNorm kind (the batches BatchNorm sees; each process holds its own RNG streams)."""
    identity = {
        "stage": stage,
        "world_size": distributed.world_size(),
        "sync_bn": params.runtime.sync_bn,
        "params": params.model_dump(mode="json", exclude={"runtime"}),
        "cfg": cfg.model_dump(mode="json"),
        "split": {name: _digest(split / name) for name in ("labeled.txt", "unlabeled.txt")},
        "init": None if init is None else _digest(init),
    }
    return json.dumps(identity, sort_keys=True)


def continued_schedule(ckpt: dict[str, Any], path: Path, iterations: int) -> tuple[int, int]:
    """(offset, length) of a run of `iterations` that continues the schedule of checkpoint
    `path`; ValueError naming the file when the checkpoint's schedule has no room for exactly
    this run (its warmup was trained for another run length: rerun it)."""
    sched = ckpt.get("schedule")
    if sched is None or ckpt.get("optimizer") is None:
        raise ValueError(
            f"{path}: no schedule or optimizer state to continue (written by an older version, "
            "or not a warmup checkpoint); rerun the warmup stage"
        )
    if sched["end"] + iterations != sched["total"]:
        raise ValueError(
            f"{path}: its schedule ends at iteration {sched['end']} of {sched['total']}, so it "
            f"leaves {sched['total'] - sched['end']} iterations, not this run's {iterations}; "
            "rerun the warmup with this run's train.epochs and train.iters_per_epoch"
        )
    return sched["end"], sched["total"]


def shared_resume(path: Path, identity: str) -> dict[str, Any] | None:
    """The resume state at `path` as rank 0 reads it, on every rank: only rank 0 writes the
    file, and on several machines only its machine has it. An unreadable file stops every rank
    (a rank left waiting for the others would hang the job)."""
    state, error = None, None
    if distributed.is_main():
        try:
            state = load_resume(path, identity)
        except ResumeError as err:
            error = str(err)
    state, error = distributed.broadcast_object((state, error))
    if error is not None:
        raise ResumeError(error)
    return state


def _section(stage: str) -> str:
    """The params section a stage trains with, as error messages name it."""
    kind, _, name = stage.partition(":")
    return f"ablations.{name}" if kind == "ablate" else kind


def run_training(
    stage: str,
    params: Params,
    cfg: TrainConfig,
    *,
    data: Path,
    split: Path,
    out: Path,
    metrics: Path,
    history: Path,
    init: Path | None = None,
    param_overrides: dict[str, Any] | None = None,
    hardness: Path | None = None,
    premise: Path | None = None,
    scores: Path | None = None,
    weights: Path | None = None,
) -> dict[str, Any] | None:
    """Train by `cfg`, then write the checkpoint, metrics JSON and history CSV atomically; return
    the summary (None on the ranks other than 0 of a DDP run, which log and write nothing).

    `hardness`, if given, receives the per-image hardness of every epoch (CSV); `premise` the
    easiness and pseudo-label mIoU of a fixed sample of unlabeled images at every evaluation
    (CSV, `premise_sample`); `scores` the test-set scores of the run's primary model, the last
    teacher (the last student without one), with per-image confusion matrices (`scoring`);
    `weights` the last student and teacher alone (small enough to commit and re-score). With
    `runtime.checkpoint_every` > 0 a resume checkpoint beside `out` is rewritten that often; a
    rerun with the same params, inputs and process count resumes from it (bit-identically on
    CPU), and it is removed once every output is written. With `runtime.nproc` > 1 outside
    torchrun the command reruns itself under torchrun (pipeline/control/launch.py). With
    `runtime.log_model` the `train` stage then logs its best teacher as an MLflow model and
    registers it (pipeline/inference/mlflow_model.py).
    """
    relaunch_under_torchrun(params.runtime.nproc, stage.partition(":")[0])
    device = setup_runtime(params.runtime, params.seed)
    with distributed.process_group(device):
        summary = _train(
            stage,
            params,
            cfg,
            device,
            data=data,
            split=split,
            out=out,
            metrics=metrics,
            history=history,
            init=init,
            param_overrides=param_overrides,
            hardness=hardness,
            premise=premise,
            scores=scores,
            weights=weights,
        )
        return summary if distributed.is_main() else None


def _train(
    stage: str,
    params: Params,
    cfg: TrainConfig,
    device: torch.device,
    *,
    data: Path,
    split: Path,
    out: Path,
    metrics: Path,
    history: Path,
    init: Path | None,
    param_overrides: dict[str, Any] | None,
    hardness: Path | None,
    premise: Path | None,
    scores: Path | None,
    weights: Path | None,
) -> dict[str, Any]:
    rank, world = distributed.rank(), distributed.world_size()
    main = distributed.is_main()
    micro_labeled, micro_unlabeled = cfg.micro_batches(world, _section(stage))
    labeled, unlabeled, n_unlabeled = train_loaders(
        params, data, split, micro_labeled, micro_unlabeled
    )
    val = val_loader(params, data, shard=True)
    iters = resolve_iters_per_epoch(cfg, n_unlabeled)
    model = build_model(params.model)
    schedule, optimizer_state = None, None
    if init is not None:
        ckpt = load_checkpoint(init)
        if getattr(cfg, "init", None) == "continue":
            schedule = continued_schedule(ckpt, init, cfg.epochs * iters)
            optimizer_state = ckpt["optimizer"]
            model.load_state_dict(ckpt["last"]["student"])
        else:
            model.load_state_dict(ckpt["best"]["student"])
    else:  # a run from scratch starts from the pretrained backbone (a warmup already did)
        load_pretrained(model, params.model)
    if stage == "warmup" and params.train.init == "continue":
        # The first part of one schedule that the training runs continue.
        after = params.train.epochs * resolve_iters_per_epoch(params.train, n_unlabeled)
        schedule = (0, cfg.epochs * iters + after)
    if rank:  # one model on every rank, then each its own augmentations (rank 0: unchanged)
        torch.manual_seed(distributed.rank_seed(params.seed, rank))
    generator = torch.Generator().manual_seed(distributed.rank_seed(params.seed, rank))
    resume_file = resume_path(out)
    if main:
        remove_resume_temps(resume_file)  # half-written by a run killed mid-save
    identity = _run_identity(stage, params, cfg, split, init)
    resume = shared_resume(resume_file, identity)
    if main and resume is not None:
        step = resume["step"]
        print(f"{stage}: resuming from {resume_file} at iteration {step}", file=sys.stderr)
    elif main and resume_file.exists():
        print(
            f"{stage}: {resume_file} is from a run with other params or inputs; starting over",
            file=sys.stderr,
        )

    n_cls, progress = params.model.num_classes, params.runtime.progress and main
    norm = input_normalization(params, data)

    def val_miou(m: torch.nn.Module) -> float:
        ev = params.evaluate
        tiles = ev.tiles()
        result = evaluate(
            m, val, n_cls, device, progress=progress, across_ranks=True, norm=norm, **tiles
        )
        return result["miou"]

    premise_rows: list[dict[str, Any]] = []
    on_eval = None
    if premise is not None and cfg.method != "supervised":
        on_eval = premise_hook(params, cfg, data, split, device, premise_rows)

    with (
        training_stops(stage, resume_file) as should_stop,
        stage_run(stage, params, cfg.method, param_overrides, train_cfg=cfg) as run,
    ):
        start = time.perf_counter()
        result = fit(
            model,
            labeled,
            unlabeled if cfg.method != "supervised" else None,
            cfg,
            Plan(
                iters_per_epoch=iters,
                strong_ops=params.aug.strong_ops,
                device=device,
                speed=params.runtime,
                schedule=schedule,
                checkpoint_every=params.runtime.checkpoint_every,
                progress=progress,
                norm=norm,
            ),
            Hooks(
                evaluate=val_miou,
                log=_epoch_logger(run),
                on_eval=on_eval,
                on_checkpoint=lambda state: save_resume(resume_file, identity, state),
                should_stop=should_stop,
            ),
            generator=generator,
            resume_state=resume,
            optimizer_state=optimizer_state,
        )
        seconds = time.perf_counter() - start
        last = result.history[-1]
        summary = {
            "method": cfg.method,
            "miou": round(100 * result.best_miou, 4),
            "best_epoch": result.best_epoch,
            "last_miou_student": round(100 * last["miou_student"], 4),
            "iterations": cfg.epochs * iters,
        }
        if "miou_teacher" in last:
            summary["last_miou_teacher"] = round(100 * last["miou_teacher"], 4)
        if scores is not None:
            summary.update(score_test(params, data, result, scores, device))
        if main:
            if premise is not None:
                write_premise(premise, premise_rows)
            if weights is not None:
                model_cfg = params.model.model_dump(mode="json")
                save_checkpoint(weights, {"model": model_cfg, **result.last})
            offset, length = schedule or (0, cfg.epochs * iters)
            span = (offset, offset + cfg.epochs * iters, length)
            _write_outputs(params, cfg, result, summary, span, out, metrics, history, hardness)
        # Wall time goes to MLflow only: the metrics file must be identical run to run.
        run.log_metrics({k: v for k, v in summary.items() if isinstance(v, int | float)})
        run.log_metrics({"train_seconds": seconds})
        for path in (metrics, history, hardness, premise, scores, weights):
            if path is not None:
                run.log_artifact(path)
        run.log_artifact(out, "checkpoints")
        if main and stage == "train" and params.runtime.log_model:
            # After every output is written, from weights already chosen: no number changes.
            logging_began = time.perf_counter()
            miou = round(100 * result.best_miou, 4)
            name, version = log_best_teacher(run.run_id, params, cfg, result, miou, data)
            run.log_metrics({"log_model_seconds": time.perf_counter() - logging_began})
            print(f"{stage}: registered the best weights as models:/{name}/{version}")
    if main:
        resume_file.unlink(missing_ok=True)  # every output is written: nothing left to resume
    return summary


def _write_outputs(
    params: Params,
    cfg: TrainConfig,
    result: FitResult,
    summary: dict[str, Any],
    span: tuple[int, int, int],
    out: Path,
    metrics: Path,
    history: Path,
    hardness: Path | None,
) -> None:
    save_checkpoint(
        out,
        {
            "model": params.model.model_dump(mode="json"),
            "method": cfg.method,
            "best": result.best,
            "last": result.last,
            "best_epoch": result.best_epoch,
            "best_miou": result.best_miou,
            # Where this run sits in its poly schedule, and its SGD momentum: what a run that
            # continues the schedule (train.init: continue) starts from.
            "schedule": {"start": span[0], "end": span[1], "total": span[2]},
            "optimizer": result.optimizer,
        },
    )
    write_json(metrics, summary)
    write_history(history, result.history)
    if hardness is not None:
        write_hardness(hardness, result.hardness)
