"""The one training loop: supervised, mean-teacher and iMAS are switches of the same code.

`fit` takes models, loaders, a config section and callbacks, and returns the best and last
weights with a per-epoch history. It knows nothing of files or tracking: the caller's `log`
callback decides where metrics go.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from imas import distributed
from imas.augment import (
    cutmix,
    cutmix_boxes,
    cutmix_partner,
    mix_views,
    random_partner,
    sample_views,
)
from imas.checkpoint import Stream, check_finite_loss, rng_state, set_rng_state
from imas.config import AdaptiveConfig, SpeedConfig, TrainConfig
from imas.data.transforms import normalize
from imas.hardness import confidence_maps, confident_ratio, hardness_from_maps
from imas.intensity import strong_view
from imas.losses import ohem_loss, supervised_loss, unsupervised_loss
from imas.model import ema_decay, ema_update, make_teacher, param_groups
from imas.speed import TrainingNet, prepare, with_amp

LogFn = Callable[[dict[str, float], int], None]
EvalFn = Callable[[nn.Module], float]
CheckpointFn = Callable[[dict[str, Any]], None]
# Called after each evaluation with (student, teacher or None, epoch); the numbers it returns
# join the epoch's history row (a diagnostic such as the easiness–quality correlation).
EvalHook = Callable[[nn.Module, nn.Module | None, int], dict[str, float]]

# 2: the RNG streams and loader positions are kept per rank (`ranks`), for DDP runs.
# 3: the LR schedule's offset and length (a run continuing another's schedule).
RESUME_FORMAT = 3


class Interrupted(KeyboardInterrupt):
    """`fit` stopped because `should_stop()` said so, at the top of iteration `step`; the state
    at that point went to `on_checkpoint` (unless no iteration had run since the start or the
    resume). A KeyboardInterrupt, so `except Exception` handlers do not swallow it."""

    def __init__(self, step: int) -> None:
        super().__init__(f"training stopped on request at iteration {step}")
        self.step = step


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


def _poly_lr(optimizer: torch.optim.Optimizer, step: int, total: int, power: float) -> float:
    factor = max(0.0, 1.0 - step / total) ** power
    for group in optimizer.param_groups:
        group["lr"] = group["base_lr"] * factor
    return optimizer.param_groups[0]["lr"]


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
    student: nn.Module, x_l: Tensor, y_l: Tensor, cfg: TrainConfig, extra: list[Tensor]
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


def _semi_step(
    net: nn.Module,
    student: nn.Module,
    teacher: nn.Module,
    x_l: Tensor,
    y_l: Tensor,
    u_w8: Tensor,
    cfg: TrainConfig,
    adaptive: AdaptiveConfig,
    strong_ops: int,
    generator: torch.Generator,
) -> tuple[Tensor, dict[str, float], Tensor | None]:
    """Loss of one teacher–student step (SPEC §1), its diagnostics and per-image hardness γ
    (None when no adaptive part uses it: then γ, and the forward it needs, are skipped).

    `net` runs the gradient forward (the student, wrapped for DDP/compile/amp), `student` the
    no-grad one. Run on a micro-batch, everything per batch in iMAS (the CutMix trigger with
    p = mean easiness, the easiest↔hardest pairing, the loss mean) is per micro-batch: the
    authors decide it per GPU batch, of which a micro-batch is the analogue.
    """
    u_w = normalize(u_w8)
    e, mean_e, gamma = None, math.nan, None
    with torch.no_grad():
        p_t = F.softmax(teacher(u_w), dim=1)
        conf, pseudo = p_t.max(dim=1)
        t_ratio = confident_ratio(conf, cfg.tau)
        if adaptive.uses_hardness:
            student.eval()
            p_s = F.softmax(student(u_w), dim=1)
            student.train()
            s_map, s_ratio = confidence_maps(p_s, cfg.tau)
            gamma = hardness_from_maps(
                s_map, pseudo, s_ratio, t_ratio, p_t.shape[1], cfg.ignore_index0
            )
            mean_easiness = float((1.0 - gamma).mean())
            # What every adaptive part below reads as "easiness": γ itself for anti-iMAS.
            e = 1.0 - gamma if adaptive.signal == "easiness" else gamma
            mean_e = float(e.mean())

        scale = e.cpu() if adaptive.scaled_magnitude else None
        u_s = normalize(strong_view(u_w8, strong_ops, generator, magnitude_scale=scale))
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
    loss_x, parts, x_stats = _labeled_loss(net, x_l, y_l, cfg, groups)

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


def _check_resume(
    resume: dict[str, Any],
    cfg: TrainConfig,
    total: int,
    iters: int,
    world: int,
    schedule: tuple[int, int],
) -> None:
    """A resume state from another run shape would train on silently wrong; refuse it."""
    if resume.get("format") != RESUME_FORMAT:
        found = resume.get("format")
        raise ValueError(f"resume state has format {found!r}, expected {RESUME_FORMAT}")
    expected = {
        "method": cfg.method,
        "total": total,
        "iters_per_epoch": iters,
        "world_size": world,
        "schedule": list(schedule),
    }
    for key, value in expected.items():
        if resume[key] != value:
            raise ValueError(f"resume state has {key}={resume[key]!r}, this run {value!r}")
    if not 0 < resume["step"] < total:
        raise ValueError(f"resume state step {resume['step']} is outside 1..{total - 1}")


@dataclass
class _Stepper:
    """What the gradients of one optimizer step need besides the batches."""

    net: TrainingNet
    student: nn.Module  # the no-grad forwards (amp applied): never wrapped for DDP
    teacher: nn.Module | None
    cfg: TrainConfig
    adaptive: AdaptiveConfig | None
    strong_ops: int
    generator: torch.Generator
    device: torch.device

    def _micro_batch(
        self, labeled: Stream, unlabeled: Stream | None
    ) -> tuple[Tensor, dict[str, float], Tensor | None]:
        x_l, y_l = (t.to(self.device) for t in next(labeled))
        if unlabeled is None:
            loss, _, x_stats = _labeled_loss(self.net.forward, normalize(x_l), y_l, self.cfg, [])
            return loss, {"loss": float(loss.detach()), **x_stats}, None
        assert self.teacher is not None and self.adaptive is not None
        u_w8 = next(unlabeled).to(self.device)
        return _semi_step(
            self.net.forward,
            self.student,
            self.teacher,
            normalize(x_l),
            y_l,
            u_w8,
            self.cfg,
            self.adaptive,
            self.strong_ops,
            self.generator,
        )

    def gradients(
        self, labeled: Stream, unlabeled: Stream | None
    ) -> tuple[dict[str, float], list[float]]:
        """Forward and backward `cfg.accumulate` micro-batches into the gradients. Each loss is
        divided by `accumulate`, so the step follows the mean micro-batch loss (DDP averages it
        over ranks too). Returns the diagnostics averaged over micro-batches and ranks, and the
        hardness of every rank's unlabeled images (micro-batch by micro-batch, rank 0's first)."""
        n = self.cfg.accumulate
        sums: dict[str, float] = {}
        gammas: list[float] = []
        for i in range(n):
            with self.net.grad_sync(i == n - 1):
                loss, stats, gamma = self._micro_batch(labeled, unlabeled)
                (loss / n).backward()
            if gamma is not None:
                gammas.extend(distributed.gather_cat(gamma).tolist())
            for key, value in stats.items():
                sums[key] = sums.get(key, 0.0) + value
        return distributed.mean_over_ranks({k: v / n for k, v in sums.items()}), gammas


def fit(
    student: nn.Module,
    labeled: torch.utils.data.DataLoader,
    unlabeled: torch.utils.data.DataLoader | None,
    cfg: TrainConfig,
    *,
    strong_ops: int,
    iters_per_epoch: int,
    evaluate_fn: EvalFn,
    generator: torch.Generator,
    log: LogFn = lambda metrics, step: None,
    log_every: int = 10,
    device: torch.device | str = "cpu",
    progress: bool = False,
    checkpoint_every: int = 0,
    on_checkpoint: CheckpointFn | None = None,
    resume: dict[str, Any] | None = None,
    speed: SpeedConfig | None = None,
    should_stop: Callable[[], bool] | None = None,
    schedule: tuple[int, int] | None = None,
    optimizer_state: dict[str, Any] | None = None,
    on_eval: EvalHook | None = None,
) -> FitResult:
    """Train `student` (in place) by `cfg.method`; evaluate every `cfg.eval_every` epochs.

    An iteration is one optimizer step over `cfg.accumulate` micro-batches from each loader (the
    loaders yield micro-batches); the LR schedule, the EMA and the step count advance once per
    iteration. Inside a process group (`imas.distributed`) every rank calls `fit` with its shard of
    the data: the student trains under DistributedDataParallel, `evaluate_fn` must return the same
    score on every rank, and the history, hardness and logged diagnostics cover all ranks. `speed`
    switches channels-last, torch.compile, bf16 autocast and SyncBatchNorm (none: all off).

    Every `checkpoint_every` iterations (0: never) `on_checkpoint` receives the resume state
    (on rank 0 only; it holds every rank's RNG streams and loader positions): weights,
    optimizer, step, every RNG stream, each loader's position and the history so far, tensors
    and plain values only. Passing that state back as `resume` on every rank, with everything
    else rebuilt as for the first call, finishes the run exactly as if it had not stopped (on
    CPU, bit for bit). The state shares tensors with the live models: the callback must write
    or copy it before returning. The caller decides where states go; `fit` knows no files.

    `schedule` = (offset, length) places this run inside a longer poly schedule: iteration i
    takes the LR of iteration offset + i of `length` (default (0, this run's iterations)). With
    `optimizer_state` (the SGD momentum a previous run ended with, e.g. `FitResult.optimizer`
    of a warmup), a run continues that run's optimisation with no restart; the EMA teacher's
    copy phase and decay still count from this run's first iteration (the authors'
    `i_iter − len(loader) · sup_only_epoch`). `on_eval` runs after every evaluation.

    `should_stop` is asked at the top of every iteration (a signal handler's flag; under DDP
    the ranks stop together if any rank's says so); then the current state goes to
    `on_checkpoint` and `Interrupted` is raised. A NaN or Inf loss raises
    `imas.checkpoint.NonFiniteError` before the optimizer step (the check is on the losses
    averaged over micro-batches and ranks, so every rank raises at the same iteration), so the
    weights and every state handed out are from finite iterations only.
    """
    if checkpoint_every < 0:
        raise ValueError(f"checkpoint_every={checkpoint_every} must be >= 0 (0: off)")
    if checkpoint_every and on_checkpoint is None:
        raise ValueError("checkpoint_every > 0 needs an on_checkpoint callback")
    semi = cfg.method != "supervised"
    if semi and unlabeled is None:
        raise ValueError(f"method {cfg.method!r} needs an unlabeled loader")
    adaptive = cfg.effective_adaptive() if semi else None
    has_aux = getattr(student, "aux", None) is not None
    if cfg.aux_weight > 0 and not has_aux:
        raise ValueError(f"aux_weight={cfg.aux_weight} needs a model with an auxiliary head")
    device = torch.device(device)
    student.to(device).train()
    speed = speed or SpeedConfig.off()
    net = prepare(student, speed, device, find_unused=has_aux and cfg.aux_weight == 0)
    teacher = make_teacher(student) if semi else None  # after `prepare`: DDP synced the weights
    optimizer = torch.optim.SGD(
        param_groups(student, cfg.lr, cfg.head_lr_mult, cfg.weight_decay),
        lr=cfg.lr,
        momentum=cfg.momentum,
    )
    if optimizer_state is not None and resume is None:
        # A copy: SGD updates the loaded momentum buffers in place, and they would otherwise be
        # the caller's tensors.
        optimizer.load_state_dict(copy.deepcopy(optimizer_state))
        # The saved state carries its run's LR and hyper-parameters; this run's config rules.
        for group, fresh in zip(
            optimizer.param_groups,
            param_groups(student, cfg.lr, cfg.head_lr_mult, cfg.weight_decay),
            strict=True,
        ):
            group.update({k: v for k, v in fresh.items() if k != "params"})
            group["momentum"] = cfg.momentum
    stepper = _Stepper(
        net,
        with_amp(student, speed, device),
        None if teacher is None else with_amp(teacher, speed, device),
        cfg,
        adaptive,
        strong_ops,
        generator,
        device,
    )
    total = cfg.epochs * iters_per_epoch
    lr_offset, lr_total = schedule if schedule is not None else (0, total)
    if not (lr_offset >= 0 and lr_offset + total <= lr_total):
        raise ValueError(
            f"schedule={schedule}: this run's {total} iterations from offset {lr_offset} do not "
            f"fit a schedule of {lr_total}"
        )
    # Each new pass reshuffles, so oversampling the labeled list does not repeat an order.
    labeled_iter = Stream(labeled)
    unlabeled_iter = Stream(unlabeled) if semi else None

    history: list[dict[str, float]] = []
    hardness: list[list[float]] = []
    best: dict[str, dict[str, Tensor] | None] = {"student": None, "teacher": None}
    best_miou, best_epoch = -math.inf, -1
    sums: dict[str, float] = {}
    epoch_gamma: list[float] = []
    step = 0
    if resume is not None:
        _check_resume(
            resume, cfg, total, iters_per_epoch, distributed.world_size(), (lr_offset, lr_total)
        )
        student.load_state_dict(resume["student"])
        if teacher is not None:
            teacher.load_state_dict(resume["teacher"])
        optimizer.load_state_dict(resume["optimizer"])
        step = resume["step"]
        history, hardness = list(resume["history"]), list(resume["hardness"])
        best, best_miou, best_epoch = resume["best"], resume["best_miou"], resume["best_epoch"]
        sums, epoch_gamma = dict(resume["sums"]), list(resume["epoch_gamma"])
        mine = resume["ranks"][distributed.rank()]
        labeled_iter.restore(mine["loaders"]["labeled"])
        if unlabeled_iter is not None:
            unlabeled_iter.restore(mine["loaders"]["unlabeled"])
        set_rng_state(mine["rng"])  # after the loaders: replaying a shuffle moves torch's RNG
        generator.set_state(mine["generator"])
    resumed_at = step

    def state() -> dict[str, Any]:
        """The resume state; a collective under DDP (every rank's streams are gathered)."""
        streams = {
            "rng": rng_state(),
            "generator": generator.get_state(),
            "loaders": {
                "labeled": labeled_iter.state(),
                "unlabeled": None if unlabeled_iter is None else unlabeled_iter.state(),
            },
        }
        return {
            "format": RESUME_FORMAT,
            "method": cfg.method,
            "total": total,
            "iters_per_epoch": iters_per_epoch,
            "world_size": distributed.world_size(),
            "schedule": [lr_offset, lr_total],
            "step": step,
            "student": student.state_dict(),
            "teacher": None if teacher is None else teacher.state_dict(),
            "optimizer": optimizer.state_dict(),
            "ranks": distributed.gather_objects(streams),
            "history": history,
            "hardness": hardness,
            "best": best,
            "best_miou": best_miou,
            "best_epoch": best_epoch,
            "sums": sums,
            "epoch_gamma": epoch_gamma,
        }

    bar = tqdm(total=total, initial=step, desc=cfg.method, disable=not progress, mininterval=1.0)
    start_epoch, start_iter = divmod(step, iters_per_epoch)
    for epoch in range(start_epoch, cfg.epochs):
        if epoch != start_epoch:
            sums, epoch_gamma = {}, []
        for _ in range(start_iter if epoch == start_epoch else 0, iters_per_epoch):
            # At the top of an iteration: a state taken at an epoch's end has its eval done.
            if checkpoint_every and step % checkpoint_every == 0 and step != resumed_at:
                snapshot = state()
                if distributed.is_main():
                    on_checkpoint(snapshot)
            if should_stop is not None and distributed.any_rank(should_stop()):
                snapshot = state() if on_checkpoint is not None and step != resumed_at else None
                if snapshot is not None and distributed.is_main():
                    on_checkpoint(snapshot)
                raise Interrupted(step)
            lr = _poly_lr(optimizer, lr_offset + step, lr_total, cfg.poly_power)
            optimizer.zero_grad(set_to_none=True)
            stats, gammas = stepper.gradients(labeled_iter, unlabeled_iter)
            check_finite_loss(stats, step, epoch)
            epoch_gamma.extend(gammas)
            optimizer.step()
            distributed.average_buffers(student)
            if teacher is not None:
                ema_update(teacher, student, ema_decay(step, iters_per_epoch, cfg.ema_decay))
            stats["lr"] = lr
            for key, value in stats.items():
                sums[key] = sums.get(key, 0.0) + value
            if step % log_every == 0:
                log({f"step/{k}": v for k, v in stats.items()}, step)
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{stats['loss']:.3f}", refresh=False)

        row = {k: v / iters_per_epoch for k, v in sums.items()}
        row["epoch"] = epoch
        if (epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs:
            row["miou_student"] = evaluate_fn(student)
            if teacher is not None:
                row["miou_teacher"] = evaluate_fn(teacher)
            if on_eval is not None:
                row.update(on_eval(student, teacher, epoch))
            score = row.get("miou_teacher", row["miou_student"])
            if score > best_miou:
                best_miou, best_epoch = score, epoch
                best = {"student": _snapshot(student), "teacher": _snapshot(teacher)}
        history.append(row)
        hardness.append(epoch_gamma)
        log({f"epoch/{k}": v for k, v in row.items() if k != "epoch"}, step)
    bar.close()
    last = {"student": _snapshot(student), "teacher": _snapshot(teacher)}
    opt_state = copy.deepcopy(optimizer.state_dict())
    return FitResult(best, last, best_epoch, best_miou, history, hardness, opt_state)
