"""The one training loop: supervised, mean-teacher and iMAS are switches of the same code.

`supervised_step` and `semi_step` are one micro-batch's loss, in the paper's order (SPEC §1).
`fit` runs them for a config section, with the schedule, the EMA teacher and the evaluations
around them, and returns the best and last weights with a per-epoch history. It knows nothing
of files or tracking: the caller's `Hooks` decide where metrics and resume states go.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from imas import distributed, resume
from imas.augment import (
    cutmix,
    cutmix_boxes,
    cutmix_partner,
    mix_views,
    random_partner,
    sample_views,
)
from imas.config import AdaptiveConfig, SpeedConfig, TeacherStudentConfig, TrainConfig
from imas.data.normalization import IMAGENET, Normalization
from imas.data.transforms import normalize
from imas.finite import check_finite_loss
from imas.hardness import confidence_maps, confident_ratio, hardness_from_maps
from imas.intensity import strong_view
from imas.losses import ohem_loss, supervised_loss, unsupervised_loss
from imas.model import ema_decay, ema_update, make_optimizer, make_teacher, poly_lr
from imas.resume import Progress, RunShape, Stream
from imas.speed import TrainingNet, prepare, with_amp

Stats = dict[str, float]
# After each evaluation: (student, teacher or None, epoch) → numbers for the epoch's history row.
EvalHook = Callable[[nn.Module, nn.Module | None, int], Stats]


@dataclass(frozen=True)
class Models:
    """The networks of one step: `net` runs the student's gradient forward (wrapped for DDP,
    torch.compile and amp as switched on), `student` and `teacher` the no-grad forwards."""

    net: Callable[..., Any]
    student: nn.Module
    teacher: nn.Module | None


def supervised_step(
    models: Models, x_l: Tensor, y_l: Tensor, cfg: TrainConfig
) -> tuple[Tensor, Stats]:
    """Loss of one supervised step on a normalised labeled batch, and its diagnostics."""
    loss, _, x_stats = _labeled_loss(models.net, x_l, y_l, cfg, [])
    return loss, {"loss": float(loss.detach()), **x_stats}


def semi_step(
    models: Models,
    x_l: Tensor,
    y_l: Tensor,
    u_w8: Tensor,
    cfg: TeacherStudentConfig,
    strong_ops: int,
    generator: torch.Generator,
    *,
    norm: Normalization = IMAGENET,
) -> tuple[Tensor, Stats, Tensor | None]:
    """Loss of one teacher–student step (SPEC §1), its diagnostics and per-image hardness γ
    (None when no adaptive part uses it: then γ, and the forward it needs, are skipped).

    `x_l` is normalised, `u_w8` the uint8 weak views (normalised here by `norm`, as `x_l` was).
    Run on a micro-batch, everything per batch in iMAS (the CutMix trigger with p = mean
    easiness, the easiest↔hardest pairing, the loss mean) is per micro-batch: the authors decide
    it per GPU batch, of which a micro-batch is the analogue.
    """
    assert models.teacher is not None
    adaptive = cfg.effective_adaptive()
    u_w = normalize(u_w8, norm)
    # e stays None when no adaptive part reads it (then nothing below does).
    e: Any = None
    mean_e, gamma = math.nan, None
    with torch.no_grad():
        p_t = F.softmax(models.teacher(u_w), dim=1)
        conf, pseudo = p_t.max(dim=1)
        t_ratio = confident_ratio(conf, cfg.tau)
        if adaptive.uses_hardness:
            models.student.eval()
            p_s = F.softmax(models.student(u_w), dim=1)
            models.student.train()
            s_map, s_ratio = confidence_maps(p_s, cfg.tau)
            gamma = hardness_from_maps(
                s_map, pseudo, s_ratio, t_ratio, p_t.shape[1], cfg.ignore_index0
            )
            mean_easiness = float((1.0 - gamma).mean())
            # What every adaptive part below reads as "easiness": γ itself for anti-iMAS.
            e = 1.0 - gamma if adaptive.signal == "easiness" else gamma
            mean_e = float(e.mean())

        scale = e.cpu() if adaptive.scaled_magnitude else None
        u_s = normalize(strong_view(u_w8, strong_ops, generator, magnitude_scale=scale), norm)
        if adaptive.intensity == "mix":
            u_s = mix_views(u_s, u_w, e)
        elif adaptive.intensity == "sample":
            u_s = sample_views(u_s, u_w, e, generator)

        fired = _cutmix_fires(adaptive, mean_e, generator)
        if fired:
            b, _, h, w = u_w.shape
            partner = (
                cutmix_partner(e.cpu())
                if adaptive.cutmix_pairing == "easiness"
                else random_partner(b, generator)
            )
            cm = cutmix(u_w, pseudo, conf, partner, cutmix_boxes(b, h, w, generator))

    # One student forward over every view: labeled, weak, CutMix, strong.
    groups = ([] if cfg.drop_weak_forward else [u_w]) + ([cm.images] if fired else [])
    groups.append(u_s)
    loss_x, parts, x_stats = _labeled_loss(models.net, x_l, y_l, cfg, groups)

    weights = e if adaptive.loss_weight else None
    loss_u = unsupervised_loss(parts[-1], pseudo, conf, cfg.tau, weights)
    if fired:
        loss_cm = unsupervised_loss(parts[-2], cm.labels, cm.confidence, cfg.tau, weights)
        loss_u = 0.5 * (loss_u + loss_cm)
    loss = loss_x + cfg.lambda_u * loss_u
    stats = {
        "loss": float(loss.detach()),
        **x_stats,
        "loss_u": float(loss_u.detach()),
        "confident_ratio": float(t_ratio.mean()),
        "cutmix": float(fired),
        # Images the teacher sees as background only: a collapse symptom (the old benchmark's
        # LR restart drove it to 16–25 % in the teacher's copy phase).
        "pure_background": float((pseudo.flatten(1) == 0).all(dim=1).float().mean()),
    }
    if gamma is not None:
        stats["easiness"] = mean_easiness
    return loss, stats, gamma


class Interrupted(KeyboardInterrupt):
    """`fit` stopped because `should_stop()` said so, at the top of iteration `step`; the state
    at that point went to `on_checkpoint` (unless no iteration had run since the start or the
    resume). A KeyboardInterrupt, so `except Exception` handlers do not swallow it."""

    def __init__(self, step: int) -> None:
        super().__init__(f"training stopped on request at iteration {step}")
        self.step = step


@dataclass(frozen=True)
class Plan:
    """How a run executes, beside what its config section trains: epoch length, strong ops,
    device and speed switches, where it sits in a longer poly schedule ((offset, length);
    none: its own), how often it logs and saves a resume state (0: never), a progress bar, and
    the statistics that normalise the uint8 batches (the dataset's; ImageNet's by default)."""

    iters_per_epoch: int
    strong_ops: int
    device: torch.device | str = "cpu"
    speed: SpeedConfig | None = None
    schedule: tuple[int, int] | None = None
    checkpoint_every: int = 0
    log_every: int = 10
    progress: bool = False
    norm: Normalization = IMAGENET


@dataclass(frozen=True)
class Hooks:
    """Where `fit` reaches its caller: `evaluate(model)` → val mIoU (the same on every rank);
    `log(metrics, step)`; `on_eval(student, teacher, epoch)` → numbers for the epoch's history
    row; `on_checkpoint(state)` gets each resume state (rank 0); `should_stop()` is asked at
    the top of every iteration (a signal handler's flag)."""

    evaluate: Callable[[nn.Module], float]
    log: Callable[[Stats, int], None] = lambda metrics, step: None
    on_eval: EvalHook | None = None
    on_checkpoint: Callable[[dict[str, Any]], None] | None = None
    should_stop: Callable[[], bool] | None = None


@dataclass
class FitResult:
    """Weights (state dicts) at the best and the last epoch, and one row of metrics per epoch.

    `best` is chosen by the teacher's val mIoU (SPEC §6), or the student's without a teacher.
    `hardness` holds, per epoch, the hardness γ of every unlabeled image trained on, in order
    (empty lists for supervised training): the distribution behind the epoch's mean easiness.
    Under DDP both cover every rank's images, and every rank returns the same result.
    """

    best: dict[str, dict[str, Tensor] | None]
    last: dict[str, dict[str, Tensor] | None]
    best_epoch: int
    best_miou: float
    history: list[dict[str, float]] = field(default_factory=list)
    hardness: list[list[float]] = field(default_factory=list)
    optimizer: dict[str, Any] | None = None  # state after the last step, for a continuing run


def fit(
    student: nn.Module,
    labeled: Iterable[Any],
    unlabeled: Iterable[Any] | None,
    cfg: TrainConfig,
    plan: Plan,
    hooks: Hooks,
    *,
    generator: torch.Generator,
    resume_state: dict[str, Any] | None = None,
    optimizer_state: dict[str, Any] | None = None,
) -> FitResult:
    """Train `student` (in place) by `cfg.method`; evaluate every `cfg.eval_every` epochs.

    An iteration is one optimizer step over `cfg.accumulate` micro-batches from each loader (the
    loaders yield micro-batches); the LR schedule, the EMA and the step count advance once per
    iteration. Inside a process group (`imas.distributed`) every rank calls `fit` with its shard
    of the data: the student trains under DistributedDataParallel, and the history, hardness
    and logged diagnostics cover all ranks.

    Every `plan.checkpoint_every` iterations `hooks.on_checkpoint` receives the resume state
    (`imas.resume.capture`: every rank's RNG streams and loader positions). Passing it back as
    `resume_state` on every rank, with everything else rebuilt as for the first call, finishes
    the run exactly as if it had not stopped (on CPU, bit for bit). When `hooks.should_stop()`
    says so (on any rank), the state goes to `on_checkpoint` and `Interrupted` is raised. A NaN
    or Inf loss raises `imas.finite.NonFiniteError` before the optimizer step, at the same
    iteration on every rank.

    With `optimizer_state` (the SGD momentum a previous run ended with, e.g. a warmup's
    `FitResult.optimizer`) and `plan.schedule`, a run continues that run's optimisation with no
    restart; the EMA teacher's copy phase and decay still count from this run's first iteration
    (the authors' `i_iter − len(loader) · sup_only_epoch`).
    """
    semi = isinstance(cfg, TeacherStudentConfig)
    _check_inputs(student, unlabeled, cfg, plan, hooks)
    device = torch.device(plan.device)
    student.to(device).train()
    speed = plan.speed or SpeedConfig.off()
    has_aux = getattr(student, "aux", None) is not None
    net = prepare(student, speed, device, find_unused=has_aux and cfg.aux_weight == 0)
    teacher = make_teacher(student) if semi else None  # after `prepare`: DDP synced the weights
    optimizer = make_optimizer(student, cfg, None if resume_state else optimizer_state)
    models = Models(
        net.forward,
        with_amp(student, speed, device),
        None if teacher is None else with_amp(teacher, speed, device),
    )
    total = cfg.epochs * plan.iters_per_epoch
    lr_offset, lr_total = plan.schedule if plan.schedule is not None else (0, total)
    if not (lr_offset >= 0 and lr_offset + total <= lr_total):
        raise ValueError(
            f"schedule={plan.schedule}: this run's {total} iterations from offset {lr_offset} "
            f"do not fit a schedule of {lr_total}"
        )
    # Each new pass reshuffles, so oversampling the labeled list does not repeat an order.
    streams = {
        "labeled": Stream(labeled),
        "unlabeled": Stream(unlabeled) if semi and unlabeled is not None else None,
    }
    shape = RunShape(
        cfg.method, total, plan.iters_per_epoch, distributed.world_size(), (lr_offset, lr_total)
    )
    p = Progress()
    if resume_state is not None:
        p = resume.restore(resume_state, shape, student, teacher, optimizer, streams, generator)
    resumed_at = p.step

    def save_or_stop() -> None:
        # At the top of an iteration: a state taken at an epoch's end has its eval done.
        every = plan.checkpoint_every
        stop = hooks.should_stop is not None and distributed.any_rank(hooks.should_stop())
        due = bool(every) and p.step % every == 0
        if (due or (stop and hooks.on_checkpoint is not None)) and p.step != resumed_at:
            state = resume.capture(shape, p, student, teacher, optimizer, streams, generator)
            if distributed.is_main():
                assert hooks.on_checkpoint is not None
                hooks.on_checkpoint(state)
        if stop:
            raise Interrupted(p.step)

    bar = tqdm(
        total=total, initial=p.step, desc=cfg.method, disable=not plan.progress, mininterval=1.0
    )
    start_epoch, start_iter = divmod(p.step, plan.iters_per_epoch)
    for epoch in range(start_epoch, cfg.epochs):
        if epoch != start_epoch:
            p.sums, p.epoch_gamma = {}, []
        for _ in range(start_iter if epoch == start_epoch else 0, plan.iters_per_epoch):
            save_or_stop()
            lr = poly_lr(optimizer, lr_offset + p.step, lr_total, cfg.poly_power)
            optimizer.zero_grad(set_to_none=True)
            stats, gammas = _gradients(models, net, cfg, plan, generator, streams, device)
            check_finite_loss(stats, p.step, epoch)
            p.epoch_gamma.extend(gammas)
            optimizer.step()
            distributed.average_buffers(student)
            if isinstance(cfg, TeacherStudentConfig) and teacher is not None:
                ema_update(teacher, student, ema_decay(p.step, plan.iters_per_epoch, cfg.ema_decay))
            stats["lr"] = lr
            for key, value in stats.items():
                p.sums[key] = p.sums.get(key, 0.0) + value
            if p.step % plan.log_every == 0:
                hooks.log({f"step/{k}": v for k, v in stats.items()}, p.step)
            p.step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{stats['loss']:.3f}", refresh=False)
        _end_epoch(p, epoch, cfg, plan, hooks, student, teacher)
    bar.close()
    last = {"student": _snapshot(student), "teacher": _snapshot(teacher)}
    opt_state = copy.deepcopy(optimizer.state_dict())
    return FitResult(p.best, last, p.best_epoch, p.best_miou, p.history, p.hardness, opt_state)


def _end_epoch(
    p: Progress,
    epoch: int,
    cfg: TrainConfig,
    plan: Plan,
    hooks: Hooks,
    student: nn.Module,
    teacher: nn.Module | None,
) -> None:
    """The epoch's history row (means of the step diagnostics, and the evaluation when due),
    the best weights so far, and the row logged."""
    row = {k: v / plan.iters_per_epoch for k, v in p.sums.items()}
    row["epoch"] = epoch
    if (epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs:
        row["miou_student"] = hooks.evaluate(student)
        if teacher is not None:
            row["miou_teacher"] = hooks.evaluate(teacher)
        if hooks.on_eval is not None:
            row.update(hooks.on_eval(student, teacher, epoch))
        score = row.get("miou_teacher", row["miou_student"])
        if score > p.best_miou:
            p.best_miou, p.best_epoch = score, epoch
            p.best = {"student": _snapshot(student), "teacher": _snapshot(teacher)}
    p.history.append(row)
    p.hardness.append(p.epoch_gamma)
    hooks.log({f"epoch/{k}": v for k, v in row.items() if k != "epoch"}, p.step)


def _gradients(
    models: Models,
    net: TrainingNet,
    cfg: TrainConfig,
    plan: Plan,
    generator: torch.Generator,
    streams: dict[str, Stream | None],
    device: torch.device,
) -> tuple[Stats, list[float]]:
    """Forward and backward `cfg.accumulate` micro-batches into the gradients. Each loss is
    divided by `accumulate`, so the step follows the mean micro-batch loss (DDP averages it
    over ranks too). Returns the diagnostics averaged over micro-batches and ranks, and the
    hardness of every rank's unlabeled images (micro-batch by micro-batch, rank 0's first)."""
    n = cfg.accumulate
    labeled, unlabeled = streams["labeled"], streams["unlabeled"]
    assert labeled is not None
    sums: Stats = {}
    gammas: list[float] = []
    for i in range(n):
        with net.grad_sync(i == n - 1):
            x_l, y_l = (t.to(device) for t in next(labeled))
            gamma = None
            if unlabeled is None or not isinstance(cfg, TeacherStudentConfig):
                loss, stats = supervised_step(models, normalize(x_l, plan.norm), y_l, cfg)
            else:
                u_w8 = next(unlabeled).to(device)
                loss, stats, gamma = semi_step(
                    models,
                    normalize(x_l, plan.norm),
                    y_l,
                    u_w8,
                    cfg,
                    plan.strong_ops,
                    generator,
                    norm=plan.norm,
                )
            (loss / n).backward()
        if gamma is not None:
            gammas.extend(distributed.gather_cat(gamma).tolist())
        for key, value in stats.items():
            sums[key] = sums.get(key, 0.0) + value
    return distributed.mean_over_ranks({k: v / n for k, v in sums.items()}), gammas


def _check_inputs(
    student: nn.Module,
    unlabeled: Iterable[Any] | None,
    cfg: TrainConfig,
    plan: Plan,
    hooks: Hooks,
) -> None:
    if plan.checkpoint_every < 0:
        raise ValueError(f"checkpoint_every={plan.checkpoint_every} must be >= 0 (0: off)")
    if plan.checkpoint_every and hooks.on_checkpoint is None:
        raise ValueError("checkpoint_every > 0 needs an on_checkpoint callback")
    if isinstance(cfg, TeacherStudentConfig) and unlabeled is None:
        raise ValueError(f"method {cfg.method!r} needs an unlabeled loader")
    if cfg.aux_weight > 0 and getattr(student, "aux", None) is None:
        raise ValueError(f"aux_weight={cfg.aux_weight} needs a model with an auxiliary head")


def resolve_iters_per_epoch(cfg: TrainConfig, num_unlabeled: int) -> int:
    """One pass over the unlabeled set (SPEC §6) unless params fix the count."""
    if cfg.iters_per_epoch is not None:
        return cfg.iters_per_epoch
    iters = num_unlabeled // cfg.batch_unlabeled
    if iters < 1:
        raise ValueError(
            f"train.batch_unlabeled={cfg.batch_unlabeled} exceeds the {num_unlabeled} unlabeled "
            "images: no full batch per epoch"
        )
    return iters


def _snapshot(model: nn.Module | None) -> dict[str, Tensor] | None:
    return None if model is None else copy.deepcopy(model.state_dict())


def _cutmix_fires(adaptive: AdaptiveConfig, mean_e: float, generator: torch.Generator) -> bool:
    if not adaptive.cutmix:
        return False
    p = mean_e if adaptive.cutmix_trigger == "easiness" else adaptive.cutmix_prob
    return torch.rand((), generator=generator).item() < p


def _pixel_loss(logits: Tensor, target: Tensor, cfg: TrainConfig) -> Tensor:
    if cfg.ohem is None:
        return supervised_loss(logits, target)
    return ohem_loss(logits, target, cfg.ohem.thresh, cfg.ohem.min_kept)


def _labeled_loss(
    student: Callable[..., Any], x_l: Tensor, y_l: Tensor, cfg: TrainConfig, extra: list[Tensor]
) -> tuple[Tensor, list[Tensor], dict[str, float]]:
    """One student forward of the labeled batch followed by `extra` batches (concatenated, so
    BatchNorm sees them together); the supervised loss of the labeled part, the logits of the
    extra parts, and loss diagnostics.

    With `aux_weight` > 0 the loss is main + aux_weight · aux, the auxiliary head's logits
    taken on the labeled slice only (U2PL's criterion); OHEM, when configured, applies to both.
    """
    x = torch.cat([x_l, *extra]) if extra else x_l
    sizes = [x_l.shape[0]] + [e.shape[0] for e in extra]
    if cfg.aux_weight > 0:
        logits, aux = student(x, with_aux=True)
        parts = logits.split(sizes)
        main = _pixel_loss(parts[0], y_l, cfg)
        loss_aux = _pixel_loss(aux[: sizes[0]], y_l, cfg)
        loss = main + cfg.aux_weight * loss_aux
        stats = {"loss_x": float(loss.detach()), "loss_aux": float(loss_aux.detach())}
        return loss, list(parts[1:]), stats
    parts = student(x).split(sizes)
    loss = _pixel_loss(parts[0], y_l, cfg)
    return loss, list(parts[1:]), {"loss_x": float(loss.detach())}
