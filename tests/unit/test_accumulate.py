"""`train.accumulate`: micro-batches summed into one optimizer step, and how a total batch splits
into processes × micro-batches."""

from __future__ import annotations

import copy

import pytest
import torch
from support.training import Squares, config
from torch import nn

import imas.train
from imas.train import Hooks, Plan, fit


class LinearPixelNet(nn.Module):
    """Per-pixel classifier without BatchNorm: its gradient does not depend on how images are
    grouped into batches, so micro-batches must reproduce the whole batch's exactly."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU())
        self.classifier = nn.Conv2d(4, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.backbone(x))


LAB, UNL = Squares(4, True, 1), Squares(8, False, 2)


def update_of_one_step(method: str, accumulate: int) -> dict[str, torch.Tensor]:
    """Weights before minus after one SGD step (lr 1, no momentum or decay): the gradient."""
    cfg = config(method, cutmix=False).model_copy(
        update={
            "epochs": 1,
            "iters_per_epoch": 1,
            "accumulate": accumulate,
            "lr": 1.0,
            "momentum": 0.0,
            "weight_decay": 0.0,
        }
    )
    n_lab, n_unl = 4 // accumulate, 8 // accumulate
    labeled = [(LAB.images[i : i + n_lab], LAB.masks[i : i + n_lab]) for i in range(0, 4, n_lab)]
    unlabeled = [UNL.images[i : i + n_unl] for i in range(0, 8, n_unl)]
    torch.manual_seed(0)
    model = LinearPixelNet()
    before = copy.deepcopy(model.state_dict())
    fit(
        model,
        labeled,
        unlabeled,
        cfg,
        Plan(iters_per_epoch=1, strong_ops=0),
        Hooks(evaluate=lambda m: 0.0),
        generator=torch.Generator().manual_seed(0),
    )
    return {k: before[k] - v for k, v in model.state_dict().items()}


@pytest.mark.parametrize("method", ["supervised", "mean_teacher"])
def test_two_micro_batches_step_like_their_union(method: str) -> None:
    whole = update_of_one_step(method, accumulate=1)
    micro = update_of_one_step(method, accumulate=2)
    for key, grad in whole.items():
        assert grad.abs().max() > 1e-4, key  # the step moved every weight
        assert torch.allclose(micro[key], grad, rtol=1e-5, atol=1e-7), key


def test_schedule_ema_and_logs_advance_once_per_optimizer_step(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    decays: list[float] = []
    real_update = imas.train.ema_update
    monkeypatch.setattr(
        imas.train, "ema_update", lambda t, s, d: (decays.append(d), real_update(t, s, d))
    )
    losses: list[float] = []
    real_loss = imas.train._pixel_loss

    def pixel_loss(*args):
        out = real_loss(*args)
        losses.append(float(out.detach()))
        return out

    monkeypatch.setattr(imas.train, "_pixel_loss", pixel_loss)
    update = {"epochs": 2, "iters_per_epoch": 2, "accumulate": 2, "ema_decay": 0.7}
    cfg = config("imas", cutmix=False).model_copy(update=update)
    labeled = [(LAB.images[i : i + 2], LAB.masks[i : i + 2]) for i in (0, 2)]
    unlabeled = [UNL.images[i : i + 4] for i in (0, 4)]
    forwards: list[int] = []
    model = LinearPixelNet()
    model.register_forward_pre_hook(lambda m, a: forwards.append(1) if m.training else None)
    logged: list[tuple[dict, int]] = []
    result = fit(
        model,
        labeled,
        unlabeled,
        cfg,
        Plan(iters_per_epoch=2, strong_ops=2, log_every=1),
        Hooks(evaluate=lambda m: 0.0, log=lambda m, s: logged.append((m, s))),
        generator=torch.Generator().manual_seed(0),
    )
    assert len(forwards) == 4 * 2  # 4 optimizer steps of 2 micro-batches each
    assert decays == [0.0, 0.0, 1 - 1 / 3, 0.7]  # SPEC §6 per optimizer step
    steps = [(m, s) for m, s in logged if "step/loss" in m]
    assert [s for _, s in steps] == [0, 1, 2, 3]
    assert [m["step/lr"] for m, _ in steps] == [0.01 * (1 - s / 4) ** 0.9 for s in range(4)]
    for i, (metrics, _) in enumerate(steps):  # the mean of the step's two micro-batches
        assert metrics["step/loss_x"] == pytest.approx((losses[2 * i] + losses[2 * i + 1]) / 2)
    assert [len(h) for h in result.hardness] == [2 * 2 * 4] * 2  # every micro-batch's images


def test_a_total_batch_splits_into_processes_and_micro_batches() -> None:
    cfg = config("imas").model_copy(
        update={"batch_labeled": 16, "batch_unlabeled": 16, "accumulate": 2}
    )
    assert cfg.micro_batches(world=2) == (4, 4)  # the paper's 16 + 16 on 2 GPUs
    assert cfg.micro_batches(world=1) == (8, 8)
    with pytest.raises(ValueError) as err:
        cfg.micro_batches(world=3, section="warmup")
    assert str(err.value) == (
        "warmup.batch_labeled=16 does not split into 3 process(es) × warmup.accumulate=2 = 6 "
        "equal micro-batches; make it a multiple of 6"
    )
    uneven = cfg.model_copy(update={"batch_unlabeled": 10})
    with pytest.raises(ValueError, match=r"train\.batch_unlabeled=10 .* 2 process\(es\)"):
        uneven.micro_batches(world=2)
